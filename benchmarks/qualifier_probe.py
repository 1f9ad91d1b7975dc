"""Does the model read the words that tell look-alikes apart ("on the left", "moves up")?

    python benchmarks/qualifier_probe.py --model glus-tiny-synth --data data/synth --split valid

Two measures on a synthetic split (``synth_meta.json`` knows every object's colour, shape and centre):

- **mirror test**: each position expression that ends in left / right / top / bottom is segmented as
  written and with the side mirrored ("the circle on the left" / "the circle on the right"); the mean
  IoU between the two predicted videos is 1.0 when the model ignores the word, and the share of each
  mask on the written expression's target says which object it picked;
- **grounding map** (models with ``vlm.grounding_map``): for single-object expressions with an identical
  look-alike (same colour and shape), per query frame, whether the target's token cell scores above
  every look-alike's cell. Chance is about 0.5: the map cannot tell the look-alikes apart.

Both live in glus_ros/qualifiers.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from glus_ros.qualifiers import map_ranking, mirror_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="glus-tiny-synth")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--split", default="valid")
    parser.add_argument("--mirror-expressions", type=int, default=30)
    parser.add_argument("--grounding-expressions", type=int, default=120)
    args = parser.parse_args()

    from glus_ros.datasets.mevis import MevisDataset
    from glus_ros.inference import load_model

    t0 = time.perf_counter()
    model = load_model(args.model).eval()
    reader = MevisDataset(args.data, args.split)
    meta = json.loads((args.data / args.split / "synth_meta.json").read_text())["videos"]
    try:
        iou, on_written, on_mirrored, n = mirror_test(model, reader, meta, args.mirror_expressions)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    print(f"mirror test, {n} position expressions: IoU(written, mirrored) {iou:.3f} (1.0: the side word is ignored); "
          f"share of the mask on the written target {on_written:.3f} as written, {on_mirrored:.3f} mirrored")
    if model.grounding_map is None:
        print("grounding map: this model has none")
    else:
        for kind, (share, frames) in map_ranking(model, reader, meta, args.grounding_expressions).items():
            print(f"grounding map, {kind}: target cell above its look-alikes' in {share:.3f} of {frames} frames "
                  "(chance about 0.5)")
    print(f"{(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
