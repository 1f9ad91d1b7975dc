"""Latency of the Molmo2 backend at the released sizes with random weights: prints numbers, asserts nothing.

One grounding = the window's frames through the vision tower and adapter (once), then one greedy answer per
expression (prefill + decode); the answer is forced to a fixed, well-formed point answer of realistic length,
so the timing does not depend on what random weights would write. Then the points become masks: SAM 2 point
prompts on the anchor and propagation over the clip (the project's tracker, hiera-L at 1024 px for
``--sam2 glus-s``). Without weights nothing here measures quality.

    .venv/bin/python benchmarks/molmo2_latency.py --size tiny                     # CPU smoke run
    .venv/bin/python benchmarks/molmo2_latency.py --size 4b --device cuda --dtype bf16 --sam2 glus-s
    .venv/bin/python benchmarks/molmo2_latency.py --config /path/to/Molmo2-8B/config.json --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList

from glus_ros.backends.molmo2_random import RELEASED_4B, ForceAnswer, random_backend
from glus_ros.backends.video import BackendPointPredictor
from glus_ros.model.config import load_config
from glus_ros.points.text import format_video_points

TINY = {
    "model_type": "molmo2",
    "vit_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                   "num_key_value_heads": 4, "head_dim": 16, "image_default_input_size": [126, 126],
                   "image_patch_size": 14, "image_num_pos": 81},
    "adapter_config": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                       "num_key_value_heads": 4, "head_dim": 16, "text_hidden_size": 64, "vit_layers": [-1, -2]},
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300, "additional_vocab_size": 16,
                    "max_position_embeddings": 8192, "rope_theta": 10000.0},
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "4b"], default="tiny", help="built-in config (4b: Molmo2-4B's)")
    parser.add_argument("--config", type=Path, help="a released Molmo2 config.json (overrides --size)")
    parser.add_argument("--sam2", default="tiny", help="model config whose sam2 node to use (glus-s: hiera-L 1024)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="Molmo2 weights")
    parser.add_argument("--frames", type=int, default=8, help="frames shown per grounding (released: up to 384)")
    parser.add_argument("--clip", type=int, default=32, help="frames the masks are propagated over")
    parser.add_argument("--points", type=int, default=3, help="points in the forced answer")
    parser.add_argument("--expressions", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size-hw", default="480x640", help="HxW of the camera frames")
    args = parser.parse_args()
    config = json.loads(args.config.read_text()) if args.config else (RELEASED_4B if args.size == "4b" else TINY)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    t0 = time.perf_counter()
    backend = random_backend(config, load_config(args.sam2).sam2, args.device, dtype)
    molmo2 = sum(p.numel() for p in backend.model.parameters()) / 1e9
    sam2 = sum(p.numel() for p in backend.tracker.parameters()) / 1e6
    print(f"built in {time.perf_counter() - t0:.1f} s: Molmo2 {molmo2:.2f} B params ({args.dtype}), SAM 2 "
          f"{args.sam2} {sam2:.0f} M, device {args.device}")
    height, width = (int(v) for v in args.size_hw.split("x"))
    rng = np.random.default_rng(0)
    clip = [(rng.random((height, width, 3)) * 255).astype(np.uint8) for _ in range(max(args.clip, args.frames))]
    window = clip[-args.frames:]
    times = [0.5 * i for i in range(args.frames)]
    answer = "Counting the " + format_video_points(
        [(times[-1], [(k + 1, ((k + 1) / (args.points + 1), 0.5)) for k in range(args.points)])], "objects") + \
        f" shows a total of {args.points}."
    force = ForceAnswer(backend.inputs.tokenizer, answer)
    backend.logits_processor = LogitsProcessorList([force])
    backend.settings.max_new_tokens = len(force.ids)
    expressions = [f"the object number {i}" for i in range(args.expressions)]
    backend.ground(window, expressions[:1], timestamps=times)   # warm-up
    grounds, encodes = [], []
    for _ in range(args.repeats):
        sync(args.device)
        t = time.perf_counter()
        video = backend.inputs.video(window)
        with torch.inference_mode():
            backend.model.get_video_features(video["pixel_values_videos"].to(args.device, dtype),
                                             video["video_token_pooling"].to(args.device),
                                             video["video_grids"].to(args.device))
        sync(args.device)
        encodes.append(time.perf_counter() - t)
        t = time.perf_counter()
        results = backend.ground(window, expressions, timestamps=times)
        sync(args.device)
        grounds.append(time.perf_counter() - t)
    prompt_tokens = int(backend.inputs.build(window, times, "Point to the object.")["input_ids"].shape[1])
    assert all(r.count == args.points for r in results), "the forced answer did not come back"
    per = statistics.median(grounds)
    print(f"grounding: {args.frames} frames ({prompt_tokens} prompt tokens), {args.expressions} expressions x "
          f"{len(force.ids)} answer tokens: median {per * 1000:.0f} ms (video preprocessing + encoding "
          f"{statistics.median(encodes) * 1000:.0f} ms of it)")
    predictor = BackendPointPredictor(backend, fps=2.0)
    backend.logits_processor = LogitsProcessorList([ForceAnswer(backend.inputs.tokenizer, format_video_points(
        [(0.5 * (args.clip // 2), [(1, (0.5, 0.5))])], "object"))])
    backend.settings.max_new_tokens = 64
    sync(args.device)
    t = time.perf_counter()
    result, _ = predictor.segment(clip[:args.clip], "the object", anchors="key")
    sync(args.device)
    took = time.perf_counter() - t
    print(f"points -> masks: {args.clip} frames of {width}x{height}, anchor {result.anchors}, {took:.2f} s in all "
          f"({took / args.clip * 1000:.0f} ms/frame incl. one grounding of {len(backend.sample_video(args.clip, 2.0))} "
          f"frames)")


if __name__ == "__main__":
    main()
