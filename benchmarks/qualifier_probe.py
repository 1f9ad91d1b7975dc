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
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from glus_ros.qualifiers import VideoFrames, mirror_test


def cell_of(obj: dict, t: int, side: int) -> tuple[int, int]:
    """(row, column) of the token cell holding the object's centre in frame ``t``."""
    from glus_ros.training.aux_heads import centre_cell

    return centre_cell(*obj["centroid"][t], side)


@torch.inference_mode()
def grounding_test(model, reader, meta: dict, limit: int) -> dict[str, tuple[float, int]]:
    """Per expression kind: share of query frames whose grounding map ranks the target's cell first."""
    from glus_ros.model.transforms import clip_input, to_tensor
    from glus_ros.sampling import context_frame_indices

    side = round(model.cfg.vlm.tokens_per_frame**0.5)
    num_query = model.cfg.sampling.num_query
    wins: dict[str, list[bool]] = defaultdict(list)
    video_frames = VideoFrames(reader)
    embedded_video, embeds, pixels = None, torch.empty(0), torch.empty(0)  # the video last encoded
    done = 0
    for expr in reader.expressions():
        entry = meta[expr.video]
        kind = entry["expressions"][str(expr.exp_id)]["kind"]
        if len(expr.obj_ids) != 1:
            continue
        target = entry["objects"][str(expr.obj_ids[0])]
        twins = [o for k, o in entry["objects"].items() if k != str(expr.obj_ids[0])
                 and o["colour"] == target["colour"] and o["shape"] == target["shape"]]
        if not twins:
            continue
        frames = video_frames(expr.video)
        if embedded_video != expr.video:
            embedded_video = expr.video
            pixels = clip_input(to_tensor(frames), model.cfg.vlm.image_size)
            embeds = model.encode_clip_frames(pixels)
        context = context_frame_indices(len(frames), model.cfg.sampling.num_context)
        for start in range(0, len(frames) - num_query + 1, num_query):
            query = list(range(start, start + num_query))
            maps = model.seg_prompts(embeds[context][None], embeds[query][None], [expr.text],
                                     context_pixels=pixels[context][None]).grounding[0]
            for i, t in enumerate(query):
                if target["visibility"][t] < 0.5:
                    continue
                own = cell_of(target, t, side)
                rivals = {cell_of(o, t, side) for o in twins if o["visibility"][t] >= 0.5} - {own}
                if rivals:
                    wins[kind].append(all(bool(maps[i][own] > maps[i][r]) for r in rivals))
        done += 1
        if done >= limit:
            break
    return {kind: (float(np.mean(v)), len(v)) for kind, v in sorted(wins.items())}


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
        for kind, (share, frames) in grounding_test(model, reader, meta, args.grounding_expressions).items():
            print(f"grounding map, {kind}: target cell above its look-alikes' in {share:.3f} of {frames} frames "
                  "(chance about 0.5)")
    print(f"{(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
