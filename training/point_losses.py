"""Set loss of the point head: predicted slots matched one-to-one to the ground-truth points.

The K slots of a query frame are an unordered set, so each ground-truth point is matched to the
slot nearest to it (Hungarian matching, cost = L1 distance of the normalised coordinates). Matched
slots learn their point (L1) and presence = 1; every other slot learns presence = 0, so the number
of present slots is the count and an absent object gives no points. A frame with more points than
slots trains its K best-matched points only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from glus_ros.points.coords import Point
from glus_ros.points.labels import components_as_objects, object_point_labels
from glus_ros.points.matching import linear_assignment

PointTargets = Sequence[Sequence[Sequence[Point]]]   # per sample, per query frame: normalised (x, y) points


def _check_targets(raw: torch.Tensor, gt_points: PointTargets) -> None:
    if raw.dim() != 4 or raw.shape[-1] != 3:
        raise ValueError(f"expected raw point slots (B, Nq, K, 3), got {tuple(raw.shape)}")
    batch, num_query = raw.shape[:2]
    if len(gt_points) != batch or any(len(frames) != num_query for frames in gt_points):
        shape = [len(frames) for frames in gt_points]
        raise ValueError(f"point targets must be {batch} samples x {num_query} query frames, got {shape}")
    for b, frames in enumerate(gt_points):
        for q, points in enumerate(frames):
            for point in points:
                if len(point) != 2 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in point):
                    raise ValueError(f"target point {point!r} of sample {b} frame {q} is not a normalised (x, y)")


def point_set_loss(raw: torch.Tensor, gt_points: PointTargets, coord_weight: float = 1.0,
                   presence_weight: float = 1.0, match_presence: float = 0.0,
                   presence_pos_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """raw (B, Nq, K, 3) from ``GLUSModel.points_from_seg`` -> {"points", "points_coord", "points_presence"}.

    ``points_coord``: mean L1 (|dx| + |dy|) over matched slots (0 when no frame has points);
    ``points_presence``: mean BCE over all slots; ``points`` = the weighted sum.
    ``match_presence`` adds ``(1 - presence)`` to the matching cost, so a slot that already claims an
    object keeps being matched to one (DETR's fix for slots that never specialise), and
    ``presence_pos_weight`` weighs the few positive slots against the many empty ones.
    """
    _check_targets(raw, gt_points)
    coords = torch.sigmoid(raw[..., :2].float())
    presence_target = torch.zeros(raw.shape[:3], device=raw.device)
    l1_terms = []
    cpu_coords = coords.detach().cpu().nan_to_num(0.5).numpy()
    cpu_presence = torch.sigmoid(raw[..., 2].detach().float()).cpu().nan_to_num(0.0).numpy()
    for b, frames in enumerate(gt_points):
        for q, points in enumerate(frames):
            if not points:
                continue
            target = np.asarray(points, dtype=np.float64)                      # (G, 2)
            cost = np.abs(cpu_coords[b, q][:, None, :] - target[None]).sum(-1)  # (K, G)
            cost = cost + match_presence * (1.0 - cpu_presence[b, q])[:, None]
            pairs = linear_assignment(cost)
            slots = torch.tensor([k for k, _ in pairs], device=raw.device)
            chosen = torch.tensor(target[[g for _, g in pairs]], dtype=coords.dtype, device=raw.device)
            l1_terms.append((coords[b, q, slots] - chosen).abs().sum(dim=-1))
            presence_target[b, q, slots] = 1.0
    coord = torch.cat(l1_terms).mean() if l1_terms else coords.sum() * 0.0
    pos_weight = torch.tensor(presence_pos_weight, device=raw.device)
    presence = F.binary_cross_entropy_with_logits(raw[..., 2].float(), presence_target, pos_weight=pos_weight)
    return {"points": coord_weight * coord + presence_weight * presence, "points_coord": coord,
            "points_presence": presence}


def point_targets_from_union(masks: torch.Tensor | np.ndarray) -> list[list[list[Point]]]:
    """Targets from union masks (B, Nq, H, W): one point per connected component (the deepest interior point).

    For batches that carry only the union of the referred objects; objects that touch count as one.
    With per-object masks use ``glus_ros.points.labels.object_point_labels`` (optionally SAM 2-selected).
    """
    arr = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if arr.ndim != 4:
        raise ValueError(f"expected union masks (B, Nq, H, W), got shape {arr.shape}")
    out: list[list[list[Point]]] = []
    for sample in arr.astype(bool):
        objects = components_as_objects(sample)                 # (N, Nq, H, W)
        out.append([object_point_labels(objects[:, q], normalised=True) for q in range(sample.shape[0])])
    return out
