"""Pointing scores of a model on a synthetic split: referring expressions and counting.

    python benchmarks/points_eval.py --model runs/synth_tiny_points/model --data data/synth_points --max-videos 20
    python benchmarks/points_eval.py --model glus-tiny-synth --source mask   # points from the [SEG] masks

Referring expressions: point accuracy (points matched 1:1 to the referred objects' masks), count
accuracy per frame and J&F of the point-prompted masks. "How many ...?" questions (the split's
synth_meta.json): exact-count accuracy per frame, where the true count is the number of counted
objects visible in that frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("data/synth_points"))
    parser.add_argument("--split", default="valid")
    parser.add_argument("--max-videos", type=int, default=20)
    parser.add_argument("--source", choices=["auto", "head", "mask"], default="auto",
                        help="points from the point head, from the [SEG] masks' components, or auto")
    parser.add_argument("--min-fraction", type=float,
                        help="mask source: drop components below this fraction of the largest "
                             "(default: glus_ros.geometry.MIN_COMPONENT_FRACTION; 0 keeps all)")
    args = parser.parse_args()

    from glus_ros.data.grounding import count_expressions
    from glus_ros.datasets.mevis import MevisDataset
    from glus_ros.geometry import MIN_COMPONENT_FRACTION
    from glus_ros.inference import load_model
    from glus_ros.points.evaluation import evaluate_points
    from glus_ros.training.data import GivenExpressions, VideoSubset

    model = load_model(args.model)
    base = VideoSubset(MevisDataset(args.data, args.split), args.max_videos)
    keep = set(base.videos())
    min_fraction = MIN_COMPONENT_FRACTION if args.min_fraction is None else args.min_fraction
    questions = [e for e in count_expressions(args.data / args.split) if e.video in keep]
    for name, reader in (("referring", base), ("counting", GivenExpressions(base, questions))):
        t0 = time.perf_counter()
        result = evaluate_points(model, reader, progress=True, source=args.source,
                                 min_fraction=min_fraction)
        print(f"{name}: {len(result.expressions)} expressions on {args.max_videos} videos, "
              f"{(time.perf_counter() - t0) / 60:.1f} min")
        counting = "-" if result.counting_accuracy is None else f"{result.counting_accuracy:.3f}"
        print(f"  point accuracy {result.point_accuracy:.3f}, count accuracy (frames) {result.count_accuracy:.3f}, "
              f"counting accuracy ('how many') {counting}, J&F of point-prompted masks {result.j_and_f:.3f}")


if __name__ == "__main__":
    main()
