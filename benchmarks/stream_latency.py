"""Live-stream latency of the streaming engine (ROS-free): prints numbers, asserts nothing.

Synthetic camera frames (the project's generator, resized to --size) are submitted at --rate Hz for
--seconds into a started engine, once per schedule (live: re-grounding whenever the MLLM is free).
Latency is submit -> result (queueing included);
frames that arrive while the engine is busy replace the pending one and count as dropped.

    .venv/bin/python benchmarks/stream_latency.py [--model tiny] [--rate 30] [--seconds 10] [--targets 2]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter

import cv2
import numpy as np
import torch

from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import generate_video
from glus_ros.inference import load_model
from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.streaming import CameraIntrinsics, EngineConfig, FrameResult, StreamFrame, StreamingEngine, TargetSpec


def camera_frames(width: int, height: int, seed: int) -> tuple[list[StreamFrame], list[str]]:
    """A synthetic clip resized to the camera size (depth and intrinsics follow), and its expressions."""
    video = generate_video(seed, 0, SynthConfig(frames=32))
    src_h, src_w = video.frames[0].shape[:2]
    sx, sy = width / src_w, height / src_h
    k = video.intrinsics
    intrinsics = CameraIntrinsics(k.fx * sx, k.fy * sy, (k.cx + 0.5) * sx - 0.5, (k.cy + 0.5) * sy - 0.5)
    frames = [
        StreamFrame(image=cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR), stamp=0.0,
                    depth=cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST), intrinsics=intrinsics)
        for rgb, depth in zip(video.frames, video.depth, strict=True)
    ]
    return frames, [e.text for e in video.expressions]


def run_schedule(model, schedule: str, args: argparse.Namespace, frames: list[StreamFrame],
                 expressions: list[str]) -> dict[str, float]:
    reground_every = 1 if schedule == "live" else args.reground_every  # live: whenever the MLLM is free
    config = EngineConfig(schedule=schedule, reground_every=reground_every, dtype=args.dtype,
                          context_refresh=args.context_refresh)
    warm = StreamingEngine(model, config)
    for text in expressions[: args.targets]:
        warm.add_target(TargetSpec("", text))
    for f in frames[:4]:
        warm.process(f)
        warm.wait_grounded()
    warm.stop()

    results: list[FrameResult] = []
    lock = threading.Lock()

    def on_result(result: FrameResult) -> None:
        with lock:
            results.append(result)

    engine = StreamingEngine(model, config, on_result=on_result)
    for text in expressions[: args.targets]:
        engine.add_target(TargetSpec("", text))
    engine.start()
    period = 1.0 / args.rate
    t0 = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - t0 < args.seconds:
        src = frames[n % len(frames)]
        engine.submit(StreamFrame(src.image, stamp=now - t0, depth=src.depth, intrinsics=src.intrinsics))
        n += 1
        time.sleep(max(0.0, t0 + n * period - time.perf_counter()))
    feed_s = time.perf_counter() - t0
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:  # let the last pending frame finish
        s = engine.stats
        if s["frames_processed"] + s["frames_dropped"] + s["errors"] >= s["frames_in"]:
            break
        time.sleep(0.01)
    engine.stop()
    stats = engine.stats
    lat = sorted(r.latency_ms for r in results)
    states = Counter(t.state for r in results for t in r.targets)
    ungrounded = sum(t.grounded_seq is None for r in results for t in r.targets)
    return {
        "submitted": stats["frames_in"], "processed": stats["frames_processed"], "errors": stats["errors"],
        "mean_ms": statistics.fmean(lat), "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)), "fps": stats["frames_processed"] / feed_s,
        "dropped": stats["frames_dropped"] / max(stats["frames_in"], 1),
        "states": dict(states), "ungrounded": ungrounded,
        "mllm_ms": engine.grounding_stats["ms_mean"], "mllm_passes": engine.grounding_stats["groundings"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--size", default="640x480", help="WxH of the camera frames")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz")
    parser.add_argument("--seconds", type=float, default=10.0, help="stream length per schedule")
    parser.add_argument("--targets", type=int, default=2, help="referred targets tracked at once")
    parser.add_argument("--reground-every", type=int, default=8)
    parser.add_argument("--schedules", default="live,fast,full")
    parser.add_argument("--context-refresh", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    model = load_model(args.model, device=args.device)
    frames, expressions = camera_frames(width, height, args.seed)
    if len(expressions) < args.targets:
        raise SystemExit(f"the synthetic clip has only {len(expressions)} expressions; use --targets <= that")
    print(f"model {args.model} on {args.device} ({args.dtype}), torch threads {torch.get_num_threads()}, "
          f"{width}x{height} at {args.rate:g} Hz for {args.seconds:g} s, {args.targets} targets")
    for schedule in args.schedules.split(","):
        r = run_schedule(model, schedule, args, frames, expressions)
        print(f"  {schedule:>4}: latency mean {r['mean_ms']:.1f} ms, p50 {r['p50_ms']:.1f} ms, "
              f"p95 {r['p95_ms']:.1f} ms | processed {r['fps']:.1f} fps ({r['processed']}/{r['submitted']}) | "
              f"dropped {100 * r['dropped']:.1f}% | errors {r['errors']} | states {r['states']} "
              f"({r['ungrounded']} before the first grounding) | MLLM {r['mllm_passes']} passes, "
              f"{r['mllm_ms']:.0f} ms each")


if __name__ == "__main__":
    main()
