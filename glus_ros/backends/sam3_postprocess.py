"""SAM 3's post-processing done in the project: duplicate suppression (mask NMS), hole filling, non-overlap.

Why here: transformers runs these steps through the hub ``kernels`` package (``cv-utils``); without it (every
install here: nothing may be downloaded at run time) it skips them with a warning, and real weights then give
duplicate instances and speckled masks. The rules are SAM 3's, as transformers' ``modeling_sam3_video`` and
``processing_sam3_video`` describe them:

- ``mask_nms``: among detections above the score threshold, greedily keep the most probable and drop every
  other whose binary-mask IoU with a kept one exceeds the threshold (``det_nms_thresh``, 0.1);
- ``fill_holes``: background components of at most ``max_area`` pixels become foreground (logit 0.1), then
  foreground components of at most ``min(max_area, half the mask's area)`` become background (-0.1)
  (``fill_hole_area``, 16, on the 288 x 288 low-resolution masks; 8-connectivity). Connected components come
  from OpenCV on the CPU: the masks are small, a copy is cheaper than a GPU labelling pass;
- ``non_overlapping``: where instances overlap, the pixel goes to the one with the highest score.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool x (M, H, W) bool -> (N, M) IoU (0 where both are empty)."""
    a2 = a.flatten(1).float()
    b2 = b.flatten(1).float()
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return inter / union.clamp(min=1.0)


def mask_nms(probs: torch.Tensor, masks: torch.Tensor, prob_threshold: float, iou_threshold: float) -> torch.Tensor:
    """(Q,) probabilities, (Q, H, W) mask logits -> (Q,) bool: above the threshold and not a duplicate."""
    keep = probs > prob_threshold
    candidates = torch.nonzero(keep).flatten()
    if candidates.numel() <= 1 or iou_threshold <= 0:
        return keep
    order = candidates[torch.argsort(probs[candidates], descending=True, stable=True)]
    ious = mask_iou(masks[order] > 0, masks[order] > 0).cpu()
    kept: list[int] = []
    for i in range(order.numel()):
        if all(float(ious[i, j]) <= iou_threshold for j in kept):
            kept.append(i)
    out = torch.zeros_like(keep)
    out[order[kept]] = True
    return out


def _component_areas(mask: np.ndarray) -> np.ndarray:
    """Per pixel, the area of its 8-connected component (0 outside the mask)."""
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0   # label 0: the pixels outside the mask
    out = areas[labels]
    out[~mask] = 0
    return out


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """(N, H, W) mask logits with small holes filled and small specks removed (module doc)."""
    if max_area <= 0 or logits.numel() == 0:
        return logits
    out = logits.clone()
    for i, mask in enumerate(logits.detach().float().cpu().numpy()):
        background = mask <= 0
        holes = background & (_component_areas(background) <= max_area)
        filled = np.where(holes, np.float32(0.1), mask)
        foreground = filled > 0
        limit = min(max_area, int(foreground.sum()) // 2)
        specks = foreground & (_component_areas(foreground) <= limit)
        result = np.where(specks, np.float32(-0.1), filled)
        out[i] = torch.from_numpy(result).to(out.device, out.dtype)
    return out


def non_overlapping(logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(N, H, W) mask logits where each foreground pixel is kept only by the highest-scoring instance there."""
    if logits.shape[0] <= 1:
        return logits
    claim = torch.where(logits > 0, scores.to(logits.dtype)[:, None, None], torch.full_like(logits, -1e4))
    owner = claim.argmax(dim=0, keepdim=True)
    mine = owner == torch.arange(logits.shape[0], device=logits.device)[:, None, None]
    return torch.where(mine, logits, logits.clamp(max=-10.0))
