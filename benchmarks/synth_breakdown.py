"""J&F of a model on a synthetic split, overall and per expression kind (attribute, motion, position, ...).

    python benchmarks/synth_breakdown.py --model models/glus-tiny-synth --data data/synth --split valid

The kind of each expression comes from the split's ``synth_meta.json``; a kind's J&F is the mean over
its expressions, as the overall score is the mean over all.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="glus-tiny-synth")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--split", default="valid")
    parser.add_argument("--max-videos", type=int)
    parser.add_argument("--key-frame", action="store_true")
    args = parser.parse_args()

    from glus_ros.datasets.mevis import MevisDataset
    from glus_ros.evaluation import evaluate_predictions
    from glus_ros.inference import predict_dataset
    from glus_ros.training.data import VideoSubset

    reader = MevisDataset(args.data, args.split)
    if args.max_videos:
        reader = VideoSubset(reader, args.max_videos)
    meta = json.loads((args.data / args.split / "synth_meta.json").read_text())["videos"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        predict_dataset(args.model, reader, Path(tmp), key_frame=args.key_frame)
        result = evaluate_predictions(tmp, reader)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for row in result.rows:
        by_kind[meta[row.video]["expressions"][str(row.exp_id)]["kind"]].append(row.j_and_f)
    videos = len({r.video for r in result.rows})
    print(f"model {args.model} on {args.data}/{args.split}: {videos} videos, {result.num_expressions} expressions, "
          f"{(time.perf_counter() - t0) / 60:.1f} min")
    print("| kind | expressions | J&F |\n|---|---|---|")
    for kind in sorted(by_kind):
        print(f"| {kind} | {len(by_kind[kind])} | {np.mean(by_kind[kind]):.3f} |")
    print(f"| all | {result.num_expressions} | {result.j_and_f:.3f} (J {result.j:.3f}, F {result.f:.3f}) |")
    # the target sits at the third decimal: the unrounded mean says which side of it a model is on
    print(f"J&F {result.j_and_f:.4f} (J {result.j:.4f}, F {result.f:.4f})")


if __name__ == "__main__":
    main()
