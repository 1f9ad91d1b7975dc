"""Points -> masks for a whole video: SAM 2 point prompts on anchor frames, bidirectional memory propagation.

VideoMolmo's post-processing: the model points at the object on some frames (anchors); SAM 2 turns
each anchor's points into a mask, and the memory tracker carries it forward and backward. Rules:

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

from glus_ros.core.frames import FrameEncoder
from glus_ros.devices import autocast_context
from glus_ros.model.transforms import logits_to_frame
from glus_ros.points.coords import Point, frame_to_sam, inside_frame, to_pixels

if TYPE_CHECKING:
    from glus_ros.model.glus import GLUSModel
    from glus_ros.model.sam2_head import FrameFeatures, SAM2Head

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

    def __init__(self, model: GLUSModel, dtype: str = "fp32", cache_frames: int = 16) -> None:
        self.model = model.eval()
        self.dtype = dtype
        self.cache_frames = cache_frames   # longest gap whose SAM 2 features are kept for both passes

    def _check(self, frames: Sequence[np.ndarray], anchors: Mapping[int, Sequence[Point]]) -> dict[int, list[Point]]:
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        height, width = frames[0].shape[:2]
        for i, f in enumerate(frames):
            if f.shape[:2] != (height, width):
                raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {width}x{height}")
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
        if not self.model.cfg.memory.enabled:
            raise ValueError("point propagation needs the memory tracker: this model has memory.enabled = false")
        num_frames = len(frames)
        height, width = frames[0].shape[:2]
        size = self.model.sam.image_size
        masks = np.zeros((num_frames, height, width), dtype=bool)
        scores = np.zeros(num_frames, dtype=np.float32)
        sources: list[tuple[Source, ...]] = [() for _ in range(num_frames)]
        cache = FrameEncoder(self.model, frames)
        order = sorted(checked)
        with autocast_context(self.model.device, self.dtype):
            memories: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
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

    def _decode_anchor(self, cache: FrameEncoder, t: int, points: list[Point], height: int, width: int,
                       ) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor]]:
        """One positive point per prompt, union of the masks; returns (low-res prob map, memory)."""
        anchor = decode_point_anchor(self.model.sam, cache.sam_features(t), points, height, width)
        return torch.sigmoid(anchor.low_res_logits[0, 0].float()).cpu().numpy(), anchor.memory

    def _propagate(self, cache: FrameEncoder, memory: tuple[torch.Tensor, torch.Tensor] | None, order: list[int],
                   anchor: int, keep: bool) -> dict[int, PassOutput]:
        """Track from an anchor's memory over ``order`` (one direction); nothing when the anchor has no points."""
        if memory is None:
            return {}
        bank = self.model.new_memory_bank()
        bank.add(*memory)
        out: dict[int, PassOutput] = {}
        for t in order:
            pred = self.model.sam.step(cache.sam_features(t), bank, None)
            out[t] = PassOutput(torch.sigmoid(pred.low_res_logits[0, 0].float()).cpu().numpy(),
                                float(torch.sigmoid(pred.object_score.float())[0, 0]), abs(t - anchor))
            if not keep:
                cache.keep_only(set())
        return out


@dataclass
class PointAnchor:
    """SAM 2's answer to points on one frame: the union of the per-point masks and its memory."""

    low_res_logits: torch.Tensor                 # (1, 1, h, w)
    logits: torch.Tensor                         # (1, 1, S, S) at SAM 2's input size
    memory: tuple[torch.Tensor, torch.Tensor]    # (features, position encoding) for a memory bank


def decode_point_anchor(sam: SAM2Head, frame: FrameFeatures, points: Sequence[Point], height: int, width: int,
                        ) -> PointAnchor:
    """Pixel ``points`` of an HxW frame (features ``frame``, batch 1) -> its anchor mask and memory.

    Each point is its own single positive prompt and the mask is their union (module doc); the memory is
    encoded from the binarised mask as "object present", as SAM 2 encodes a prompted frame.
    """
    n = len(points)
    if n == 0:
        raise ValueError("an anchor needs at least one point")
    device = frame.vision_feats[0].device
    coords = torch.tensor(frame_to_sam(points, height, width, sam.image_size), dtype=torch.float32,
                          device=device).view(n, 1, 2)
    labels = torch.ones(n, 1, dtype=torch.int32, device=device)
    per_point = frame.select(torch.zeros(n, dtype=torch.long, device=device))
    pred = sam.decode(sam.condition_on_memory(per_point, None), per_point, None, coords, labels)
    low_res = pred.low_res_logits.amax(dim=0, keepdim=True)
    logits = pred.logits.amax(dim=0, keepdim=True)
    present = torch.ones_like(pred.object_score[:1])  # the points say the object is there
    feats, pos = sam.sam._encode_new_memory(
        current_vision_feats=frame.vision_feats, feat_sizes=frame.feat_sizes, pred_masks_high_res=logits,
        object_score_logits=present, is_mask_from_pts=True,
    )
    return PointAnchor(low_res, logits, (feats, pos[-1]))


def normalised_anchors(points: Mapping[int, Sequence[Point]], height: int, width: int) -> dict[int, list[Point]]:
    """Anchors from normalised points (the point head's or the text parser's) to the pixel points ``segment`` takes."""
    out: dict[int, list[Point]] = {}
    for t, pts in points.items():
        finite = [(u, v) for u, v in pts if math.isfinite(u) and math.isfinite(v)]
        out[t] = [(min(max(x, -0.5), width - 0.5), min(max(y, -0.5), height - 0.5))
                  for x, y in to_pixels(finite, height, width)]
    return out
