"""Region (J) and boundary (F) scores of binary masks, as the DAVIS/MeViS benchmarks compute them.

The numbers must match the official evaluation, so the definitions follow it to the pixel:
J is the IoU with "empty union -> 1"; F matches one-pixel boundary maps within a disk of radius
``ceil(0.008 * image diagonal)`` pixels. Pure numpy (plus ``cv2.dilate`` for speed).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

DEFAULT_BOUND_TH = 0.008


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    """Any array as bool (nonzero = foreground), so callers may pass 0/1, 0/255 or bool masks."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an HxW mask, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void mask shape {void.shape} differs from ground-truth shape {gt.shape}")


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """J = |pred ∩ gt| / |pred ∪ gt| over non-void pixels; 1.0 when the union is empty."""
    pred_b, gt_b = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    void_b = None if void is None else _as_bool(void, "void")
    _check_same_shape(pred_b, gt_b, void_b)
    keep = np.ones_like(gt_b) if void_b is None else ~void_b
    inter = np.count_nonzero(pred_b & gt_b & keep)
    union = np.count_nonzero((pred_b | gt_b) & keep)
    return 1.0 if union == 0 else inter / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a mask: pixels that differ from their east, south or south-east neighbour.

    The last row only compares eastwards, the last column only southwards, and the bottom-right
    corner is never a boundary (the DAVIS convention, which F scores depend on).
    """
    seg = _as_bool(mask, "mask")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def bound_pixels(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Boundary tolerance in pixels: ``ceil(bound_th * diagonal)`` if bound_th < 1, else bound_th itself."""
    if not bound_th > 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a pixel count and must be a whole number, got {bound_th}")
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(height, width))


def disk(radius: int) -> np.ndarray:
    """(2r+1)x(2r+1) uint8 kernel with ones where x^2 + y^2 <= r^2 (the dilation element of F)."""
    if radius < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    offsets = np.arange(-radius, radius + 1)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).astype(np.uint8)


def boundary_f_measure(
    pred: np.ndarray,
    gt: np.ndarray,
    bound_th: float = DEFAULT_BOUND_TH,
    void: np.ndarray | None = None,
) -> float:
    """F = harmonic mean of boundary precision and recall with a disk tolerance.

    Both boundaries empty -> 1.0; exactly one empty -> 0.0; P + R = 0 -> 0.0.
    Void pixels are cleared from both masks before their boundaries are taken.
    """
    pred_b, gt_b = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    void_b = None if void is None else _as_bool(void, "void")
    _check_same_shape(pred_b, gt_b, void_b)
    if void_b is not None:
        pred_b = pred_b & ~void_b
        gt_b = gt_b & ~void_b
    radius = bound_pixels(gt_b.shape[0], gt_b.shape[1], bound_th)

    pred_edge = boundary_map(pred_b)
    gt_edge = boundary_map(gt_b)
    n_pred = np.count_nonzero(pred_edge)
    n_gt = np.count_nonzero(gt_edge)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0

    kernel = disk(radius)
    pred_dil = cv2.dilate(pred_edge.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_edge.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pred_edge & gt_dil) / n_pred
    recall = np.count_nonzero(gt_edge & pred_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def video_j_f(preds: np.ndarray, gts: np.ndarray, bound_th: float = DEFAULT_BOUND_TH) -> tuple[float, float]:
    """Mean J and mean F over the frames of a (T, H, W) prediction and ground truth (no frame dropped)."""
    preds = np.asarray(preds)
    gts = np.asarray(gts)
    if preds.shape != gts.shape:
        raise ValueError(f"prediction shape {preds.shape} differs from ground-truth shape {gts.shape}")
    if preds.ndim != 3:
        raise ValueError(f"video_j_f expects (T, H, W) arrays, got shape {preds.shape}")
    if preds.shape[0] == 0:
        raise ValueError("video_j_f needs at least one frame, got 0")
    j = [region_similarity(p, g) for p, g in zip(preds, gts, strict=True)]
    f = [boundary_f_measure(p, g, bound_th) for p, g in zip(preds, gts, strict=True)]
    return float(np.mean(j)), float(np.mean(f))
