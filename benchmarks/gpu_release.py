"""GPU memory the tracker node's off switch frees (lifecycle deactivate with release_on_deactivate): prints numbers.

A TrackerNode on --device (a CUDA device) is configured, a target is tracked on --frames synthetic frames
(through the engine, so its history and memory bank fill), then the node is deactivated and activated again.
torch.cuda.memory_allocated / memory_reserved are printed after each step. Needs a GPU; asserts nothing.

    .venv/bin/python benchmarks/gpu_release.py [--model glus-tiny-synth] [--device cuda] [--frames 16]
"""

from __future__ import annotations

import argparse

import cv2
import torch

from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import generate_video
from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.ros_env import apply_ros_environment
from glus_ros.streaming.types import StreamFrame, TargetSpec


def mib(device: torch.device) -> str:
    return (f"allocated {torch.cuda.memory_allocated(device) / 2**20:8.1f} MiB, "
            f"reserved {torch.cuda.memory_reserved(device) / 2**20:8.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 1
    width, height = (int(v) for v in args.size.split("x"))
    apply_ros_environment(force=True)
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from glus_ros.ros.tracker_node import TrackerNode

    context = Context()
    rclpy.init(context=context, args=[])
    node = TrackerNode(context=context, parameter_overrides=[Parameter("model", value=args.model),
                                                             Parameter("device", value=args.device)])
    try:
        device = torch.device(args.device)
        print(f"before configure:          {mib(device)}")
        node.trigger_configure()
        print(f"configured (model loaded): {mib(device)}")
        node.trigger_activate()
        node.engine.stop()  # frames go through process() below, not a camera
        node.engine.add_target(TargetSpec("t", "the red circle"))
        video = generate_video(0, 0, SynthConfig(frames=args.frames))
        for t, rgb in enumerate(video.frames):
            node.engine.process(StreamFrame(cv2.resize(rgb, (width, height)), float(t)))
        torch.cuda.synchronize(device)
        print(f"tracking {args.frames} frames: {mib(device)}  {node.engine.cache_sizes()}")
        node.trigger_deactivate()
        print(f"deactivated (off switch):  {mib(device)}  model {node.model_state()}")
        node.trigger_activate()
        print(f"activated again:           {mib(device)}  model {node.model_state()}")
    finally:
        node.trigger_shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
