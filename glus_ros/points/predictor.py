"""The model's points for every frame of a video, and the point-prompted video masks built from them.

Two sources of points (``source``): ``"head"``, the point head on each query frame's [SEG] state (the
video read in consecutive windows of ``num_query`` frames with the fixed context frames, one MLLM pass
per window), or ``"mask"``, one point per connected component of the frame's [SEG] mask
(``glus_ros.geometry.component_points``; works for every model); ``"auto"`` takes the head when the model has
one. Anchors for the mask propagation are either the single most confident
frame ("key") or every ``k``-th frame (VideoMolmo points on sampled frames); an anchor frame
without points says the object is absent there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from glus_ros.core.frames import FrameEncoder
from glus_ros.devices import autocast_context
from glus_ros.geometry import MIN_COMPONENT_FRACTION, component_points
from glus_ros.inference import VideoSegmenter
from glus_ros.model.point_head import decode_points
from glus_ros.model.prompting import clean_expression
from glus_ros.points.coords import Point, to_normalised
from glus_ros.points.propagation import PointPropagator, PointSegmentation, normalised_anchors
from glus_ros.sampling import context_frame_indices

if TYPE_CHECKING:
    from glus_ros.model.glus import GLUSModel


@dataclass
class FramePoints:
    points: list[list[Point]]    # per frame: normalised (x, y) points; the list length is the count
    confidence: np.ndarray       # (T,) highest slot presence probability of each frame

    @property
    def counts(self) -> list[int]:
        return [len(p) for p in self.points]


def anchor_frames(confidence: np.ndarray, anchors: str | int) -> list[int]:
    """``"key"``: the most confident frame; an int ``k``: frames 0, k, 2k, ..."""
    if anchors == "key":
        return [int(np.argmax(confidence))]
    if isinstance(anchors, (int, np.integer)) and not isinstance(anchors, bool) and anchors >= 1:
        return list(range(0, len(confidence), int(anchors)))
    raise ValueError(f"anchors must be 'key' or a frame stride >= 1, got {anchors!r}")


POINT_SOURCES = ("auto", "head", "mask")


class PointPredictor:
    def __init__(self, model: GLUSModel, dtype: str = "fp32", source: str = "auto", min_area: int = 4,
                 min_fraction: float = MIN_COMPONENT_FRACTION) -> None:
        if source not in POINT_SOURCES:
            raise ValueError(f"point source must be one of {list(POINT_SOURCES)}, got {source!r}")
        has_head = model.point_head is not None and model.cfg.points is not None
        if source == "head" and not has_head:
            raise ValueError("this model has no point head (add 'points: {}' to its config and train it, "
                             "or take points from its masks: source 'mask')")
        if min_area < 1:
            raise ValueError(f"min_area must be >= 1 pixel, got {min_area}")
        if not 0.0 <= min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
        self.model = model.eval()
        self.dtype = dtype
        self.source = source if source != "auto" else ("head" if has_head else "mask")
        self.min_area = min_area
        self.min_fraction = min_fraction

    def frame_points(self, frames: Sequence[np.ndarray], expression: str) -> FramePoints:
        """Points of every frame (normalised) from the predictor's source."""
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        expression = clean_expression(expression)
        if self.source == "mask":
            return self._mask_points(frames, expression)
        return self._head_points(frames, expression)

    def _mask_points(self, frames: Sequence[np.ndarray], expression: str) -> FramePoints:
        """One point per connected component of each frame's [SEG] mask (components below ``min_fraction``
        of the largest dropped); confidence = SAM 2's object score."""
        seg = VideoSegmenter(self.model, self.dtype).segment(frames, expression)
        height, width = seg.masks.shape[1:]
        points = [to_normalised(component_points(m, self.min_area, self.min_fraction), height, width)
                  for m in seg.masks]
        return FramePoints(points, seg.scores.astype(np.float32))

    @torch.inference_mode()
    def _head_points(self, frames: Sequence[np.ndarray], expression: str) -> FramePoints:
        """The point head's points, from windows of ``num_query`` consecutive frames."""
        cfg = self.model.cfg
        assert cfg.points is not None
        num_frames, num_query = len(frames), cfg.sampling.num_query
        context = context_frame_indices(num_frames, cfg.sampling.num_context)
        cache = FrameEncoder(self.model, frames)
        context_pixels = cache.context_pixels(context) if context else None
        points: list[list[Point]] = [[] for _ in range(num_frames)]
        confidence = np.zeros(num_frames, dtype=np.float32)
        with autocast_context(self.model.device, self.dtype):
            for start in range(0, num_frames, num_query):
                window = list(range(start, min(start + num_query, num_frames)))
                query = window + [window[-1]] * (num_query - len(window))
                embeds = cache.frame_tokens(context + query)
                out = self.model.seg_prompts(embeds[None, : len(context)], embeds[None, len(context):], [expression],
                                             context_pixels=context_pixels)
                raw = self.model.points_from_seg(out.seg_hidden, out.query_states).float()
                decoded = decode_points(raw, cfg.points.threshold)[0]
                finite = torch.isfinite(raw[0]).all(dim=-1)
                presence = torch.where(finite, torch.sigmoid(raw[0, :, :, 2]), 0.0).amax(dim=-1)
                for slot, t in enumerate(window):
                    points[t] = decoded[slot]
                    confidence[t] = float(presence[slot])
                cache.keep_only(set(context))
        return FramePoints(points, confidence)

    def segment(self, frames: Sequence[np.ndarray], expression: str, anchors: str | int = "key",
                ) -> tuple[PointSegmentation, FramePoints]:
        """Point-prompted masks of every frame: points on the anchor frames, SAM 2 propagation between them."""
        predicted = self.frame_points(frames, expression)
        chosen = anchor_frames(predicted.confidence, anchors)
        height, width = frames[0].shape[:2]
        pixel_anchors = normalised_anchors({t: predicted.points[t] for t in chosen}, height, width)
        return PointPropagator(self.model, self.dtype).segment(frames, pixel_anchors), predicted
