"""Does the model pick the right object? Per frame, where its mask lies: on the target or on another object.

    python benchmarks/selection_breakdown.py --model glus-tiny-synth --data data/synth --split valid --max-videos 15

For every expression of a synthetic split and every frame: the share of predicted pixels on the referred
objects and on the other objects of the scene (``synth_meta.json`` lists them all), whether the mask
lies mostly (> 50%) on another object, and the IoU on the frames where it lies mostly on the target.
Mean per expression kind. ``-o key=value`` overrides the model config (e.g. ``memory.enabled=false``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="glus-tiny-synth")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--split", default="valid")
    parser.add_argument("--max-videos", type=int, default=15)
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from glus_ros.datasets.mevis import MevisDataset
    from glus_ros.evaluation import prediction_path, read_prediction
    from glus_ros.inference import load_model, predict_dataset
    from glus_ros.model.config import deep_update
    from glus_ros.training.config import parse_override
    from glus_ros.training.data import VideoSubset

    overrides: dict = {}
    for item in args.override:
        overrides = deep_update(overrides, parse_override(item))
    reader = VideoSubset(MevisDataset(args.data, args.split), args.max_videos)
    meta = json.loads((args.data / args.split / "synth_meta.json").read_text())["videos"]
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        predict_dataset(load_model(args.model, overrides=overrides or None), reader, Path(tmp))
        for expr in reader.expressions():
            kind = meta[expr.video]["expressions"][str(expr.exp_id)]["kind"]
            target = reader.gt_masks(expr)
            others = [reader.gt_masks(dataclasses.replace(expr, anno_ids=(o["anno_id"],)))
                      for o in meta[expr.video]["objects"].values() if o["anno_id"] not in (expr.anno_ids or ())]
            s = stats[kind]
            for t, frame in enumerate(reader.frames(expr.video)):
                pred = read_prediction(prediction_path(Path(tmp), expr, frame), target.shape[1:])
                area = pred.sum()
                if area == 0:
                    continue
                on_target = (pred & target[t]).sum() / area
                on_other = sum((pred & m[t] & ~target[t]).sum() for m in others) / area
                s["on_target"].append(on_target)
                s["on_other"].append(on_other)
                s["mostly_other"].append(float(on_other > 0.5))
                if on_target > 0.5:
                    s["iou_on_target"].append((pred & target[t]).sum() / (pred | target[t]).sum())
    print(f"model {args.model} on {args.data}/{args.split} ({args.max_videos} videos), frames with a mask")
    print("| kind | frames | share on target | share on other objects | mostly on another object "
          "| IoU when on target |")
    print("|---|---|---|---|---|---|")
    for kind in sorted(stats):
        s = stats[kind]
        print(f"| {kind} | {len(s['on_target'])} | {np.mean(s['on_target']):.3f} | {np.mean(s['on_other']):.3f} | "
              f"{np.mean(s['mostly_other']):.3f} | {np.mean(s['iou_on_target']) if s['iou_on_target'] else 0:.3f} |")


if __name__ == "__main__":
    main()
