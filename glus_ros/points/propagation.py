"""Points -> masks for a whole video: point prompts on anchor frames, bidirectional memory propagation.

VideoMolmo's post-processing: the model points at the object on some frames (anchors); a point tracker
(``points/trackers.py``: SAM 2, SAM 3's tracker or EdgeTAM; what follows says SAM 2 for all) turns each
anchor's points into a mask, and its memory carries it forward and backward. Rules:

- anchor with points: each point is its own single positive SAM 2 prompt (two points on two objects
  must not merge into one ambiguous prompt); the anchor mask is the union (max of the logits). The
  points assert the object is there: the anchor mask is shown whatever SAM 2's object score says
  (its score is 1), and its memory, from the binarised mask as SAM 2 encodes prompted frames, is
  written as "object present". That memory seeds a fresh bank for each pass from the anchor;
- anchor without points: the object is absent there: empty mask, and it ends any pass (nothing to track);
- passes run between consecutive anchors: frame ``t`` gets the FORWARD pass from the nearest anchor
  before it and the BACKWARD pass from the nearest anchor after it (when those have points). Frames
  before the first anchor get only the backward pass, after the last only the forward one;
- fusion (``fuse_passes``): probability maps and visibility probabilities are averaged with weights
  1 / (temporal distance to the pass's anchor), so the nearer anchor counts more; equally near
  anchors count equally. The object is hidden where the fused visibility is <= 0.5; elsewhere the
  mask is fused probability > 0.5.

Fusion happens at SAM 2's low mask resolution; the fused map is then resized (as logits) to the frame.
Frames are processed gap by gap: what is held is one gap's low-resolution maps, plus its SAM 2
features only when the gap is short and both passes read them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from glus_ros.devices import autocast_context
from glus_ros.model.transforms import check_video_size, logits_to_frame
from glus_ros.points.coords import Point, inside_frame, to_pixels
from glus_ros.points.sam2_points import PointAnchor, as_point_tracker, decode_point_anchor
from glus_ros.points.trackers import PointTrack, PointTracker, VideoFrames

if TYPE_CHECKING:
    from glus_ros.model.glus import GLUSModel

__all__ = ["PassOutput", "PointAnchor", "PointPropagator", "PointSegmentation", "decode_point_anchor",
           "fuse_passes", "normalised_anchors", "probability_to_mask"]

Source = tuple[str, int]   # ("anchor" | "absent" | "forward" | "backward", anchor frame)


@dataclass
class PassOutput:
    """One propagation pass's prediction for one frame."""

    prob: np.ndarray     # (h, w) mask probability
    visible: float       # probability that the object is visible
    distance: int        # frames between this frame and the anchor that seeded the pass (>= 1)


def fuse_passes(forward: PassOutput | None, backward: PassOutput | None) -> tuple[np.ndarray, float]:
    """Inverse-distance weighted mean of the passes a frame got -> (probability map, visibility)."""
    passes = [p for p in (forward, backward) if p is not None]
    if not passes:
        raise ValueError("fuse_passes needs at least one pass")
    if len(passes) == 2 and passes[0].prob.shape != passes[1].prob.shape:
        raise ValueError(f"pass maps differ in shape: {passes[0].prob.shape} vs {passes[1].prob.shape}")
    for p in passes:
        if p.distance < 1:
            raise ValueError(f"a propagated frame is at least 1 frame from its anchor, got distance {p.distance}")
    weights = [1.0 / p.distance for p in passes]
    total = sum(weights)
    prob = sum(w * p.prob.astype(np.float32) for w, p in zip(weights, passes, strict=True)) / total
    visible = sum(w * p.visible for w, p in zip(weights, passes, strict=True)) / total
    return np.asarray(prob, dtype=np.float32), float(visible)


@dataclass
class PointSegmentation:
    masks: np.ndarray                   # (T, H, W) bool
    scores: np.ndarray                  # (T,) visibility probability (1 on anchors with points, 0 on empty ones)
    sources: list[tuple[Source, ...]]   # per frame: what produced it, e.g. (("forward", 8), ("backward", 12))
    anchors: list[int] = field(default_factory=list)


def probability_to_mask(prob: np.ndarray, sam_size: int, height: int, width: int) -> np.ndarray:
    """A low-res probability map -> the (H, W) mask, resized as logits exactly as SAM 2 masks are elsewhere."""
    p = torch.from_numpy(np.clip(prob.astype(np.float32), 1e-7, 1 - 1e-7))
    logits = (torch.log(p) - torch.log1p(-p))[None, None]
    logits = F.interpolate(logits, size=(sam_size, sam_size), mode="bilinear", align_corners=False)
    return (logits_to_frame(logits, height, width)[0] > 0).numpy()


class PointPropagator:
    """Masks for every frame of a video from points on some of its frames (see module doc)."""

    def __init__(self, model: GLUSModel | PointTracker, dtype: str = "fp32", cache_frames: int = 16) -> None:
        """``model``: a point tracker, or a model whose SAM 2 is one (a GLUS model, a ``SAM2Tracker``)."""
        self.model = model.eval()
        self.tracker = as_point_tracker(model)
        self.dtype = dtype
        self.cache_frames = cache_frames   # longest gap whose SAM 2 features are kept for both passes

    def _check(self, frames: Sequence[np.ndarray], anchors: Mapping[int, Sequence[Point]]) -> dict[int, list[Point]]:
        height, width = check_video_size(frames)
        if not anchors:
            raise ValueError("need at least one anchor frame")
        checked: dict[int, list[Point]] = {}
        for t, points in anchors.items():
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < len(frames):
                raise ValueError(f"anchor frame {t!r} is not a frame index of this {len(frames)}-frame video")
            pts = [(float(x), float(y)) for x, y in points]
            for p in pts:
                if not inside_frame(p, height, width):
                    raise ValueError(f"anchor point {p} of frame {t} is not on the {width}x{height} frame")
            checked[int(t)] = pts
        return checked

    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray], anchors: Mapping[int, Sequence[Point]]) -> PointSegmentation:
        """``anchors``: frame index -> (x, y) pixel points on that frame (an empty list: object absent there)."""
        checked = self._check(frames, anchors)
        if not self.tracker.has_memory:
            raise ValueError("point propagation needs the memory tracker: this model has memory.enabled = false")
        num_frames = len(frames)
        height, width = frames[0].shape[:2]
        size = self.tracker.image_size
        masks = np.zeros((num_frames, height, width), dtype=bool)
        scores = np.zeros(num_frames, dtype=np.float32)
        sources: list[tuple[Source, ...]] = [() for _ in range(num_frames)]
        cache = self.tracker.video_frames(frames)
        order = sorted(checked)
        with autocast_context(self.tracker.device, self.dtype):
            memories: dict[int, PointTrack] = {}   # each anchor with points: its seeded track
            for t in order:
                if not checked[t]:
                    sources[t] = (("absent", t),)
                    continue
                prob, memories[t] = self._decode_anchor(cache, t, checked[t], height, width)
                masks[t] = probability_to_mask(prob, size, height, width)
                scores[t] = 1.0
                sources[t] = (("anchor", t),)
                cache.keep_only(set())
            bounds = [-1, *order, num_frames]
            for before, after in itertools.pairwise(bounds):
                gap = list(range(before + 1, after))
                if not gap:
                    continue
                # a gap seen by two passes keeps its frames' features for the second one, if short enough
                keep = before in memories and after in memories and len(gap) <= self.cache_frames
                forward = self._propagate(cache, memories.get(before), gap, before, keep)
                backward = self._propagate(cache, memories.get(after), gap[::-1], after, keep)
                for t in gap:
                    fwd, bwd = forward.get(t), backward.get(t)
                    if fwd is None and bwd is None:
                        continue
                    prob, visible = fuse_passes(fwd, bwd)
                    scores[t] = visible
                    masks[t] = probability_to_mask(prob, size, height, width) if visible > 0.5 else False
                    sources[t] = tuple(s for s, out in ((("forward", before), fwd), (("backward", after), bwd))
                                       if out is not None)
                cache.keep_only(set())
        return PointSegmentation(masks, scores, sources, order)

    def _decode_anchor(self, cache: VideoFrames, t: int, points: list[Point], height: int, width: int,
                       ) -> tuple[np.ndarray, PointTrack]:
        """One positive point per prompt, union of the masks; returns (low-res prob map, the seeded track)."""
        track = self.tracker.new_track()
        anchor = track.seed(cache.features(t), points, height, width)
        return torch.sigmoid(anchor.low_res_logits[0, 0].float()).cpu().numpy(), track

    def _propagate(self, cache: VideoFrames, seeded: PointTrack | None, order: list[int], anchor: int,
                   keep: bool) -> dict[int, PassOutput]:
        """Track from an anchor's seed over ``order`` (one direction); nothing when the anchor has no points."""
        if seeded is None:
            return {}
        track = seeded.fork()
        out: dict[int, PassOutput] = {}
        for t in order:
            pred = track.step(cache.features(t))
            out[t] = PassOutput(torch.sigmoid(pred.low_res_logits[0, 0].float()).cpu().numpy(),
                                float(torch.sigmoid(pred.object_score.float())[0, 0]), abs(t - anchor))
            if not keep:
                cache.keep_only(set())
        return out


def normalised_anchors(points: Mapping[int, Sequence[Point]], height: int, width: int) -> dict[int, list[Point]]:
    """Anchors from normalised points (the point head's or the text parser's) to the pixel points ``segment`` takes."""
    out: dict[int, list[Point]] = {}
    for t, pts in points.items():
        finite = [(u, v) for u, v in pts if math.isfinite(u) and math.isfinite(v)]
        out[t] = [(min(max(x, -0.5), width - 0.5), min(max(y, -0.5), height - 0.5))
                  for x, y in to_pixels(finite, height, width)]
    return out
