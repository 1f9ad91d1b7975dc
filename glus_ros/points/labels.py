"""Point supervision derived from masks (VideoMolmo's annotation recipe), so mask datasets train pointing.

For each object mask, ``k`` candidate points are sampled inside it, favouring the interior (weights
from the distance transform; the deepest interior point is always a candidate). With a segmenter
(SAM 2 prompted with one positive point on the frame) the candidate whose SAM 2 mask best matches
the ground truth (IoU) is kept; without one, the deepest interior point is the label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from glus_ros.points.coords import Point, frame_to_sam, to_normalised

if TYPE_CHECKING:
    from glus_ros.model.glus import GLUSModel

SegmentFn = Callable[[Point], np.ndarray]


def _check_mask(mask: np.ndarray) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"object mask must be HxW, got shape {arr.shape}")
    arr = arr.astype(bool, copy=False)
    if not arr.any():
        raise ValueError("cannot place a point in an empty mask")
    return arr


def interior_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest background pixel (the frame edge counts as background)."""
    padded = np.pad(_check_mask(mask).astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def candidate_points(mask: np.ndarray, candidates: int = 8, rng: np.random.Generator | None = None) -> list[Point]:
    """The deepest interior point first, then up to ``candidates - 1`` distinct pixels drawn by interior depth."""
    if candidates < 1:
        raise ValueError(f"need at least one candidate point, got {candidates}")
    depth = interior_distance(mask)
    rng = rng if rng is not None else np.random.default_rng(0)
    flat = depth.ravel()
    deepest = int(np.argmax(flat))
    inside = np.flatnonzero(flat > 0)
    others = inside[inside != deepest]
    picks = [deepest]
    if others.size and candidates > 1:
        weights = flat[others] / flat[others].sum()
        take = min(candidates - 1, others.size)
        picks += rng.choice(others, size=take, replace=False, p=weights).tolist()
    width = depth.shape[1]
    return [(float(i % width), float(i // width)) for i in picks]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def best_point_label(mask: np.ndarray, candidates: int = 8, segment_fn: SegmentFn | None = None,
                     rng: np.random.Generator | None = None) -> Point:
    """The (x, y) pixel point that best stands for the object (see module doc); ties keep the deeper candidate."""
    target = _check_mask(mask)
    points = candidate_points(target, candidates, rng)
    if segment_fn is None:
        return points[0]
    best, best_iou = points[0], -1.0
    for point in points:
        predicted = np.asarray(segment_fn(point)).astype(bool, copy=False)
        if predicted.shape != target.shape:
            raise ValueError(f"segment_fn returned a {predicted.shape} mask for a {target.shape} ground truth")
        iou = mask_iou(predicted, target)
        if iou > best_iou:
            best, best_iou = point, iou
    return best


def object_point_labels(object_masks: np.ndarray, candidates: int = 8, segment_fn: SegmentFn | None = None,
                        rng: np.random.Generator | None = None, normalised: bool = False) -> list[Point]:
    """One point per visible object of a frame ((N, H, W) masks; empty masks are absent objects, no point).

    The list's length is the frame's true count. ``normalised`` returns (u, v) in [0, 1] (point-head targets).
    """
    masks = np.asarray(object_masks)
    if masks.ndim != 3:
        raise ValueError(f"object masks must be (N, H, W), got shape {masks.shape}")
    points = [best_point_label(m, candidates, segment_fn, rng) for m in masks if m.any()]
    return to_normalised(points, *masks.shape[1:]) if normalised else points


def components_as_objects(union: np.ndarray) -> np.ndarray:
    """(T, H, W) union masks -> (N, T, H, W): per frame, its connected components (8-connected) as objects.

    Components are numbered per frame in raster order, so object n of one frame is not object n of another.
    """
    union = np.asarray(union, dtype=bool)
    if union.ndim != 3:
        raise ValueError(f"union masks must be (T, H, W), got shape {union.shape}")
    per_frame = []
    for mask in union:
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        per_frame.append([labels == k for k in range(1, count)])
    n = max((len(c) for c in per_frame), default=0)
    out = np.zeros((n, *union.shape), dtype=bool)
    for t, comps in enumerate(per_frame):
        for k, comp in enumerate(comps):
            out[k, t] = comp
    return out


def sam_point_segmenter(model: GLUSModel, frame_rgb: np.ndarray) -> SegmentFn:
    """A ``segment_fn`` for one frame: SAM 2 of a ``GLUSModel`` prompted with one positive point, no memory.

    The frame is encoded once; each call decodes one mask at the frame's own size.
    """
    from glus_ros.model.transforms import logits_to_frame, sam_input, to_tensor

    height, width = frame_rgb.shape[:2]
    size = model.sam.image_size
    with torch.inference_mode():
        features = model.encode_sam_frames(sam_input(to_tensor([frame_rgb]).to(model.device), size))

    def segment(point: Point) -> np.ndarray:
        [(x, y)] = frame_to_sam([point], height, width, size)
        coords = torch.tensor([[[x, y]]], dtype=torch.float32, device=model.device)
        labels = torch.ones(1, 1, dtype=torch.int32, device=model.device)
        with torch.inference_mode():
            pred = model.sam.step(features, None, None, coords, labels)
            return (logits_to_frame(pred.logits, height, width)[0] > 0).cpu().numpy()

    return segment
