"""Per-frame CPU (or GPU) time of offline GLUS segmentation: prints numbers, asserts nothing.

    .venv/bin/python benchmarks/segment_speed.py [--model tiny] [--frames 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from glus_ros.inference import VideoSegmenter, load_model
from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.model.transforms import clip_input, sam_input, to_tensor


def synthetic_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((height, width, 3)) * 255).astype(np.uint8) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="480x640", help="HxW of the input frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    model = load_model(args.model, device=args.device)
    frames = synthetic_frames(args.frames, height, width)
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, {args.frames} frames of {width}x{height}")
    for dtype in ("fp32", "bf16"):
        seg = VideoSegmenter(model, dtype=dtype)
        seg.segment(frames[:6], "the red circle")  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            seg.segment(frames, "the red circle")
            times.append((time.perf_counter() - t0) / args.frames * 1000)
        print(f"  segment {dtype}: {statistics.median(times):.1f} ms/frame (median of {args.repeats})")
    # where the time goes, per frame, fp32
    with torch.inference_mode():
        pixels = to_tensor(frames[:8]).to(model.device)
        parts = {}
        t0 = time.perf_counter()
        clip_pixels = clip_input(pixels, model.cfg.vlm.image_size)
        embeds = model.encode_clip_frames(clip_pixels)
        parts["vision tower (per frame)"] = (time.perf_counter() - t0) / 8
        t0 = time.perf_counter()
        out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"],
                                context_pixels=clip_pixels[None, :4])
        parts["LLM window pass"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = model.encode_sam_frames(sam_input(pixels[:1], model.sam.image_size))
        parts["SAM 2 image encoder (per frame)"] = time.perf_counter() - t0
        bank = model.new_memory_bank()
        for i in range(8):
            model.track_step(feats, out.prompts[:, i % 4], bank)
        t0 = time.perf_counter()
        model.track_step(feats, out.prompts[:, 0], bank)
        parts["memory read + decode + memory write"] = time.perf_counter() - t0
    for name, seconds in parts.items():
        print(f"  {name}: {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
