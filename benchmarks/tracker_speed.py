"""Per-frame time of the live tracker path (ROS-free): prints numbers, asserts nothing.

The tracker is what runs on every camera frame: preprocessing, the SAM 2 image encoder, memory read +
mask decode + memory write for every target, and the outputs (mask at frame size, points). Printed:

1. where a tracker frame's time goes, with the previous implementation of each changed stage beside the
   current one ("before" / "after" in the same run): float vs 8-bit preprocessing, one SAM 2 step per
   target vs one batched step for all targets;
2. the engine's whole tracker frame (frames between MLLM passes) at 1 and 2 torch threads;
3. the tracker frame while the MLLM re-grounds beside it in the live schedule's worker (every frame
   due), with and without ``yield_to_tracker``, at 1 and 2 threads: what two loops on 2 cores cost;
4. with ``--compile``: ``torch.compile`` of the SAM 2 image encoder (compile time and ms per frame).

    .venv/bin/python benchmarks/tracker_speed.py [--model glus-tiny-synth] [--size 640x480] [--targets 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_latency import camera_frames

from glus_ros.geometry import component_points
from glus_ros.inference import load_model
from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.model.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    clip_input,
    logits_to_frame,
    normalise_uint8,
    resize_uint8,
    sam_input,
    to_tensor,
)
from glus_ros.streaming import EngineConfig, StreamingEngine, TargetSpec


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def stages(model, frames, targets: int, repeats: int) -> None:
    image = frames[0].image
    height, width = image.shape[:2]
    size = model.sam.image_size
    clip_size = model.cfg.vlm.image_size

    def float_path():
        pixels = to_tensor([image])
        return clip_input(pixels, clip_size), sam_input(pixels, size)

    def uint8_path():
        small = resize_uint8(image, clip_size)
        sam_small = small if size == clip_size else resize_uint8(image, size)
        return normalise_uint8(small, CLIP_MEAN, CLIP_STD), normalise_uint8(sam_small, IMAGENET_MEAN, IMAGENET_STD)

    with torch.inference_mode():
        print(f"  preprocessing: before (float, two resizes) {median_ms(float_path, repeats):.2f} ms | "
              f"after (8-bit, one resize) {median_ms(uint8_path, repeats):.2f} ms")
        sam_pixels = uint8_path()[1]
        print(f"  SAM 2 image encoder: {median_ms(lambda: model.encode_sam_frames(sam_pixels), repeats):.2f} ms")
        features = model.encode_sam_frames(sam_pixels)
        prompts = [torch.randn(1, model.sam.prompt_dim, generator=torch.Generator().manual_seed(i))
                   for i in range(targets)]
        banks = [model.new_memory_bank() for _ in range(targets)]
        for _ in range(20):  # full banks: every step reads all slots
            model.track_steps(features, prompts, banks, [None] * targets)

        def one_by_one():
            return [model.track_step(features, p, b) for p, b in zip(prompts, banks, strict=True)]

        def batched():
            return model.track_steps(features, prompts, banks, [None] * targets)

        before, after = median_ms(one_by_one, repeats), median_ms(batched, repeats)
        print(f"  memory read + decode + write, {targets} targets: before (one step each) {before:.2f} ms | "
              f"after (one batched step) {after:.2f} ms")
        pred = batched()[0]
        mask = (logits_to_frame(pred.logits, height, width)[0] > 0).numpy()
        print(f"  outputs per target: mask at {width}x{height} "
              f"{median_ms(lambda: (logits_to_frame(pred.logits, height, width)[0] > 0).numpy(), repeats):.2f} ms, "
              f"points {median_ms(lambda: component_points(mask), repeats):.2f} ms")


def tracker_frame(model, frames, texts: list[str], threads: int, repeats: int) -> float:
    """ms of an engine frame with no MLLM pass (the "fast" schedule between re-groundings)."""
    torch.set_num_threads(threads)
    engine = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=10**9, reground_below=0.0))
    for text in texts:
        engine.add_target(TargetSpec("", text))
    engine.process(frames[0])
    index = [1]

    def step():
        engine.process(frames[index[0] % len(frames)])
        index[0] += 1

    return median_ms(step, repeats)


def tracker_beside_mllm(model, frames, texts: list[str], threads: int, yield_to_tracker: bool,
                        repeats: int) -> tuple[float, float, int]:
    """(tracker ms per frame, MLLM ms per pass, passes) with the live worker re-grounding all the time."""
    torch.set_num_threads(threads)
    engine = StreamingEngine(model, EngineConfig(schedule="live", reground_every=1, reground_below=0.0,
                                                 context_refresh=8, yield_to_tracker=yield_to_tracker))
    for text in texts:
        engine.add_target(TargetSpec("", text))
    try:
        engine.process(frames[0])
        engine.wait_grounded()
        times = []
        for i in range(1, repeats + 4):
            t0 = time.perf_counter()
            engine.process(frames[i % len(frames)])
            if i > 3:
                times.append(time.perf_counter() - t0)
            time.sleep(max(0.0, 1 / 30 - (time.perf_counter() - t0)))  # a 30 Hz camera: the worker gets the rest
        stats = engine.grounding_stats
    finally:
        engine.stop()
    return statistics.median(times) * 1000, stats["ms_mean"], int(stats["groundings"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--size", default="640x480", help="WxH of the camera frames")
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile on the image encoder")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    model = load_model(args.model).eval()
    frames, expressions = camera_frames(width, height, 0)
    texts = expressions[: args.targets]
    torch.set_num_threads(1)
    print(f"model {args.model}, {width}x{height}, {args.targets} targets; stages at 1 torch thread:")
    stages(model, frames, args.targets, args.repeats)
    for threads in (1, 2):
        ms = tracker_frame(model, frames, texts, threads, args.repeats)
        print(f"tracker frame (no MLLM pass), {threads} thread(s): {ms:.1f} ms")
    for threads in (1, 2):
        for yield_to_tracker in (True, False):
            ms, mllm_ms, passes = tracker_beside_mllm(model, frames, texts, threads, yield_to_tracker, args.repeats)
            print(f"tracker frame beside the MLLM worker, {threads} thread(s), yield_to_tracker={yield_to_tracker}: "
                  f"{ms:.1f} ms (MLLM pass {mllm_ms:.1f} ms wall, {passes} passes)")
    if args.compile:
        torch.set_num_threads(1)
        with torch.inference_mode():
            pixels = torch.randn(1, 3, model.sam.image_size, model.sam.image_size)
            eager = median_ms(lambda: model.sam.sam.forward_image(pixels), args.repeats)
            t0 = time.perf_counter()
            compiled = torch.compile(model.sam.sam.forward_image, dynamic=False)
            compiled(pixels)
            compile_s = time.perf_counter() - t0
            ms = median_ms(lambda: compiled(pixels), args.repeats)
            print(f"torch.compile image encoder: compile {compile_s:.0f} s, {ms:.2f} ms against {eager:.2f} ms eager")


if __name__ == "__main__":
    main()
