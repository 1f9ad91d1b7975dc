"""Does a model read the words that tell look-alikes apart? Two probes on synthetic splits.

- The mirror test: each position expression that ends in left / right / top / bottom is segmented as
  written and with the side mirrored; when the model ignores the word the two masks are the same.
- The map ranking: for single-object expressions with an identical look-alike (same colour and shape),
  per query frame, whether the grounding map scores the target's token cell above every look-alike's;
  chance is about 0.5, by expression kind (motion, position, relation, ...).

Used by ``benchmarks/qualifier_probe.py`` and the default model's tests.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

MIRROR = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def mirrored(text: str) -> str | None:
    """The expression with its final side word mirrored, or None when it does not end in one."""
    words = text.split()
    if not words or words[-1] not in MIRROR:
        return None
    return " ".join([*words[:-1], MIRROR[words[-1]]])


class VideoFrames:
    """The frames of the video last asked for (expressions come grouped by video)."""

    def __init__(self, reader) -> None:
        self.reader, self.video, self.frames = reader, None, []

    def __call__(self, video: str) -> list[np.ndarray]:
        if video != self.video:
            self.video, self.frames = video, [self.reader.load_frame(video, f) for f in self.reader.frames(video)]
        return self.frames


def mirror_test(model, reader, meta: dict, limit: int) -> tuple[float, float, float, int]:
    """Mean IoU(written, mirrored) and the share of each mask on the written target, over ``limit`` expressions."""
    from glus_ros.inference import VideoSegmenter  # the model stack loads only when the test runs

    segmenter = VideoSegmenter(model, "fp32")
    video_frames = VideoFrames(reader)
    ious, on_written, on_mirrored = [], [], []
    for expr in reader.expressions():
        kind = meta[expr.video]["expressions"][str(expr.exp_id)]["kind"]
        other = mirrored(expr.text)
        if kind != "position" or other is None:
            continue
        frames = video_frames(expr.video)
        a = segmenter.segment(frames, expr.text).masks
        b = segmenter.segment(frames, other).masks
        target = reader.gt_masks(expr).astype(bool)
        ious.append((a & b).sum() / max(int((a | b).sum()), 1))
        on_written.append((a & target).sum() / max(int(a.sum()), 1))
        on_mirrored.append((b & target).sum() / max(int(b.sum()), 1))
        if len(ious) >= limit:
            break
    if not ious:
        raise ValueError("no position expression ending in left / right / top / bottom in this split")
    return float(np.mean(ious)), float(np.mean(on_written)), float(np.mean(on_mirrored)), len(ious)


def _cell_of(obj: dict, t: int, side: int) -> tuple[int, int]:
    """(row, column) of the token cell holding the object's centre in frame ``t``."""
    from glus_ros.training.aux_heads import centre_cell

    return centre_cell(*obj["centroid"][t], side)


@torch.inference_mode()
def map_ranking(model, reader, meta: dict, limit: int) -> dict[str, tuple[float, int]]:
    """Per expression kind: (share of query frames whose grounding map ranks the target's cell first, frames),
    over the first ``limit`` expressions that have an identical look-alike."""
    from glus_ros.model.transforms import clip_input, to_tensor
    from glus_ros.sampling import context_frame_indices

    if model.grounding_map is None:
        raise ValueError("this model has no grounding map to rank cells with")
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
            pixels = clip_input(to_tensor(frames), model.cfg.vlm.image_size).to(model.device)
            embeds = model.encode_clip_frames(pixels)
        context = context_frame_indices(len(frames), model.cfg.sampling.num_context)
        for start in range(0, len(frames) - num_query + 1, num_query):
            query = list(range(start, start + num_query))
            maps = model.seg_prompts(embeds[context][None], embeds[query][None], [expr.text],
                                     context_pixels=pixels[context][None]).grounding[0]
            for i, t in enumerate(query):
                if target["visibility"][t] < 0.5:
                    continue
                own = _cell_of(target, t, side)
                rivals = {_cell_of(o, t, side) for o in twins if o["visibility"][t] >= 0.5} - {own}
                if rivals:
                    wins[kind].append(all(bool(maps[i][own] > maps[i][r]) for r in rivals))
        done += 1
        if done >= limit:
            break
    return {kind: (float(np.mean(v)), len(v)) for kind, v in sorted(wins.items())}
