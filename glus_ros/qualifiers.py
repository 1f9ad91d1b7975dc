"""The mirror test: does a model read the side word of "the circle on the left"?

Each position expression that ends in left / right / top / bottom is segmented as written and with the
side mirrored; when the model ignores the word the two masks are the same. Used by
``benchmarks/qualifier_probe.py`` and the default model's tests.
"""

from __future__ import annotations

import numpy as np

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
