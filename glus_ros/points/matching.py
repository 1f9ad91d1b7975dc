"""One-to-one matching and the pointing metrics built on it (point accuracy, counting accuracy).

``linear_assignment`` is the Hungarian algorithm (shortest augmenting paths with potentials,
O(n^2 m)) for rectangular cost matrices; it serves both the point-set loss (slots vs ground-truth
points) and point accuracy (points vs object masks), so scipy is not needed.

Point accuracy of a frame = matched hits / max(#predicted points, #visible ground-truth objects):
a hit is a point inside an object's mask, each point and each object used once, the matching
chosen to maximise hits. Dividing by the larger count penalises both extra points and missed
objects. Frames with neither points nor visible objects say nothing and are left out of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from glus_ros.points.coords import Point, pixel_index, to_pixels


def linear_assignment(cost: np.ndarray | Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Rows matched to columns minimising the summed cost; ``min(rows, cols)`` pairs sorted by row."""
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("cost matrix holds NaN or inf")
    rows, cols = matrix.shape
    if rows == 0 or cols == 0:
        return []
    transposed = rows > cols
    if transposed:
        matrix = matrix.T
        rows, cols = cols, rows
    # 1-based potentials u (rows) and v (columns); match[j] = row assigned to column j (0 = none)
    u = np.zeros(rows + 1)
    v = np.zeros(cols + 1)
    match = np.zeros(cols + 1, dtype=np.int64)
    way = np.zeros(cols + 1, dtype=np.int64)
    for i in range(1, rows + 1):
        match[0] = i
        j0 = 0
        min_v = np.full(cols + 1, np.inf)
        used = np.zeros(cols + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            reduced = matrix[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < min_v[1:])
            min_v[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, min_v[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            min_v[~used] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0 != 0:  # flip the augmenting path
            j1 = int(way[j0])
            match[j0] = match[j1]
            j0 = j1
    pairs = [(int(match[j]) - 1, j - 1) for j in range(1, cols + 1) if match[j] != 0]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


def _object_masks(masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(N, H, W) bool of the objects visible in the frame; one (H, W) mask is one object."""
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        if arr.size == 0:
            return np.zeros((0, 1, 1), dtype=bool)
        raise ValueError(f"object masks must be (N, H, W) or (H, W), got shape {arr.shape}")
    arr = arr.astype(bool, copy=False)
    return arr[arr.any(axis=(1, 2))]


def point_hits(points: Sequence[Point], masks: np.ndarray | Sequence[np.ndarray], normalised: bool = True) -> int:
    """How many points land in distinct visible objects, matched one-to-one to maximise that number."""
    objects = _object_masks(masks)
    if len(points) == 0 or objects.shape[0] == 0:
        return 0
    height, width = objects.shape[1:]
    pixels = to_pixels(points, height, width) if normalised else list(points)
    hit = np.zeros((len(pixels), objects.shape[0]))
    for i, point in enumerate(pixels):
        index = pixel_index(point, height, width)
        if index is not None:
            hit[i] = objects[:, index[0], index[1]]
    return int(sum(hit[r, c] for r, c in linear_assignment(-hit)))


def frame_point_accuracy(points: Sequence[Point], masks: np.ndarray | Sequence[np.ndarray],
                         normalised: bool = True) -> float | None:
    """hits / max(#points, #visible objects); None when the frame has neither (not scored)."""
    visible = _object_masks(masks).shape[0]
    denominator = max(len(points), visible)
    if denominator == 0:
        return None
    return point_hits(points, masks, normalised) / denominator


def point_accuracy(points_per_frame: Sequence[Sequence[Point]],
                   masks_per_frame: Sequence[np.ndarray | Sequence[np.ndarray]], normalised: bool = True) -> float:
    """Mean frame point accuracy over the frames with points or visible objects; NaN when there are none."""
    if len(points_per_frame) != len(masks_per_frame):
        raise ValueError(f"{len(points_per_frame)} frames of points but {len(masks_per_frame)} frames of masks")
    scores = [frame_point_accuracy(p, m, normalised) for p, m in zip(points_per_frame, masks_per_frame, strict=True)]
    scored = [s for s in scores if s is not None]
    return float(np.mean(scored)) if scored else math.nan


def count_accuracy(predicted: Sequence[int], target: Sequence[int]) -> float:
    """Exact-count accuracy: the fraction of cases whose predicted count equals the true one."""
    if len(predicted) != len(target):
        raise ValueError(f"{len(predicted)} predicted counts but {len(target)} true counts")
    if len(target) == 0:
        raise ValueError("count_accuracy needs at least one case")
    if any(int(c) < 0 for c in (*predicted, *target)):
        raise ValueError("counts must be >= 0")
    return sum(int(p) == int(t) for p, t in zip(predicted, target, strict=True)) / len(target)
