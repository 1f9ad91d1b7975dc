"""Live against offline quality on a MeViS-layout split (ROS-free): prints numbers, asserts nothing.

In one run: the offline J&F (``glus-ros eval --model``: the whole video known, context frames spread
over all of it), then each live replay asked for (``glus_ros/live_eval.py``, what ``glus-ros eval --live``
does: every expression through a fresh streaming engine frame by frame, causally), with its J&F, its
ratio to offline (over all frames, and over the frames after the first: a live target cannot have a mask
on the frame its command came with, before the MLLM has answered), the frames that got their own result
and those with a grounded target, and the latency.

A live mode is ``nodrop:<context_refresh>`` (the replay waits for the tracker and the MLLM worker after
every frame: nothing is skipped, deterministic) or ``<rate>hz:<context_refresh>`` (frames come at that
rate in wall time; what the tracker has no time for is dropped and scored with the mask the robot
still holds).

    .venv/bin/python benchmarks/live_quality.py --data data/synth --split valid \
        --modes nodrop:1,30hz:1,nodrop:8,30hz:8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from glus_ros.datasets.mevis import MevisDataset
from glus_ros.evaluation import evaluate_predictions
from glus_ros.inference import load_model, predict_dataset
from glus_ros.live_eval import predict_dataset_live
from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.streaming import EngineConfig


def parse_mode(text: str) -> tuple[float, int]:
    """``nodrop:R`` -> (0, R); ``30hz:R`` -> (30, R)."""
    name, _, refresh = text.partition(":")
    rate = 0.0 if name == "nodrop" else float(name.lower().removesuffix("hz"))
    return rate, int(refresh or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--split", default="valid")
    parser.add_argument("--modes", default="nodrop:1,30hz:1")
    parser.add_argument("--schedule", default="live", choices=["live", "fast", "full"])
    args = parser.parse_args()
    torch.set_num_threads(1)  # one torch thread per loop (cpu_threads 1), as eval --live on a CPU
    modes = [parse_mode(m) for m in args.modes.split(",") if m]
    dataset = MevisDataset(args.data, args.split)
    model = load_model(args.model)
    count = len(dataset.expressions())
    print(f"model {args.model}, split {args.split} ({count} expressions), schedule {args.schedule}, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        predict_dataset(model, dataset, Path(tmp) / "offline", progress=False)
        offline = evaluate_predictions(Path(tmp) / "offline", dataset).j_and_f
        offline_later = evaluate_predictions(Path(tmp) / "offline", dataset, from_frame=1).j_and_f
        print(f"  offline: J&F {offline:.4f}, frames 1.. {offline_later:.4f} ({time.perf_counter() - t0:.0f} s)")
        for rate, refresh in modes:
            config = EngineConfig(schedule=args.schedule, reground_every=1, reground_below=0.0,
                                  context_refresh=refresh, cpu_threads=1)
            out = Path(tmp) / f"live_{rate:g}_{refresh}"
            t0 = time.perf_counter()
            stats = predict_dataset_live(model, dataset, out, config, rate, progress=False)
            score = evaluate_predictions(out, dataset).j_and_f
            later = evaluate_predictions(out, dataset, from_frame=1).j_and_f
            mode = f"{rate:g} Hz with drops" if rate else "no drops"
            print(f"  live, {mode}, context_refresh {refresh}: J&F {score:.4f} = {score / offline:.3f} x offline; "
                  f"after the command frame {later:.4f} = {later / offline_later:.3f} x | "
                  f"frames answered {100 * stats.answered_fraction:.1f}% ({stats.answered}/{stats.frames}), "
                  f"with a grounded target {100 * stats.grounded_fraction:.1f}% | latency p50 "
                  f"{stats.latency(50):.1f} ms, p95 {stats.latency(95):.1f} ms | MLLM passes {stats.groundings} "
                  f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
