"""One-to-one matching (checked against brute force) and the point and counting accuracies built on it."""

import itertools
import math

import numpy as np
import pytest

from glus_ros.points.matching import (
    count_accuracy,
    frame_point_accuracy,
    linear_assignment,
    point_accuracy,
    point_hits,
)


def _brute_force(cost: np.ndarray) -> float:
    rows, cols = cost.shape
    if rows <= cols:
        perms = itertools.permutations(range(cols), rows)
        return min(sum(cost[r, c] for r, c in enumerate(perm)) for perm in perms)
    return _brute_force(cost.T)


def test_hungarian_matches_brute_force_on_random_matrices():
    rng = np.random.default_rng(0)
    for trial in range(300):
        rows, cols = rng.integers(1, 6, size=2)
        # integer costs in a small range make many ties; floats the general case
        cost = rng.integers(0, 4, size=(rows, cols)).astype(float) if trial % 2 else rng.normal(size=(rows, cols))
        pairs = linear_assignment(cost)
        assert len(pairs) == min(rows, cols)
        assert len({r for r, _ in pairs}) == len(pairs) == len({c for _, c in pairs})
        assert math.isclose(sum(cost[r, c] for r, c in pairs), _brute_force(cost), abs_tol=1e-9)


def test_hungarian_edge_cases_and_errors():
    assert linear_assignment(np.zeros((0, 3))) == []
    assert linear_assignment([[5.0]]) == [(0, 0)]
    assert linear_assignment([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]) == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match="NaN or inf"):
        linear_assignment([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="2-D"):
        linear_assignment([1.0, 2.0])


def _masks(h=20, w=30, boxes=()):
    out = np.zeros((len(boxes), h, w), dtype=bool)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        out[i, r0:r1, c0:c1] = True
    return out


def test_matching_is_one_to_one_and_maximises_hits():
    # object A covers both points, object B only the first: greedy (p0 -> A) would score 1, optimal is 2
    masks = _masks(boxes=[(0, 20, 0, 30), (0, 10, 0, 10)])
    assert point_hits([(5.0, 5.0), (20.0, 15.0)], masks, normalised=False) == 2
    # two points in the same single object: only one counts
    one = _masks(boxes=[(0, 10, 0, 10)])
    assert point_hits([(2.0, 2.0), (3.0, 3.0)], one, normalised=False) == 1
    assert frame_point_accuracy([(2.0, 2.0), (3.0, 3.0)], one, normalised=False) == 0.5


def test_accuracy_penalises_missing_and_extra_points_and_skips_empty_frames():
    masks = _masks(boxes=[(0, 10, 0, 10), (10, 20, 20, 30)])
    assert frame_point_accuracy([(5.0, 5.0), (25.0, 15.0)], masks, normalised=False) == 1.0
    assert frame_point_accuracy([(5.0, 5.0)], masks, normalised=False) == 0.5            # one object missed
    extra = [(5.0, 5.0), (25.0, 15.0), (15.0, 2.0)]
    assert frame_point_accuracy(extra, masks, normalised=False) == pytest.approx(2 / 3)
    assert frame_point_accuracy([], masks) == 0.0
    # an object that is not visible in this frame (empty mask) is not a target
    hidden = np.concatenate([masks[:1], np.zeros((1, 20, 30), dtype=bool)])
    assert frame_point_accuracy([(5.0, 5.0)], hidden, normalised=False) == 1.0
    assert frame_point_accuracy([], np.zeros((1, 20, 30), dtype=bool)) is None
    assert frame_point_accuracy([(0.5, 0.5)], np.zeros((0, 20, 30), dtype=bool)) == 0.0
    # off-frame or non-finite points are misses, not errors
    assert frame_point_accuracy([(-3.0, 5.0), (math.nan, 1.0)], masks, normalised=False) == 0.0


def test_normalised_points_and_frame_edges():
    masks = _masks(boxes=[(0, 20, 25, 30)])                 # the last five columns
    assert point_hits([(1.0, 0.5)], masks) == 1              # u = 1 is the outer edge of the last column
    assert point_hits([(0.999, 0.0)], masks) == 1
    assert point_hits([(0.5, 0.5)], masks) == 0
    assert point_hits([(29.0, 0.0)], masks, normalised=False) == 1
    assert point_hits([(2.0, 3.0)], masks[0], normalised=False) == 0   # an (H, W) mask is one object


def test_point_accuracy_over_frames():
    masks = [_masks(boxes=[(0, 10, 0, 10)]), np.zeros((1, 20, 30), dtype=bool), _masks(boxes=[(0, 10, 0, 10)])]
    points = [[(5.0, 5.0)], [], [(25.0, 15.0)]]
    assert point_accuracy(points, masks, normalised=False) == 0.5  # the empty middle frame is not scored
    assert math.isnan(point_accuracy([[]], [np.zeros((1, 4, 4), dtype=bool)]))
    with pytest.raises(ValueError, match="frames"):
        point_accuracy(points, masks[:2])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        point_hits([(0.5, 0.5)], np.zeros((1, 1, 4, 4)))


def test_count_accuracy():
    assert count_accuracy([0, 2, 3, 1], [0, 2, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="predicted counts"):
        count_accuracy([1], [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        count_accuracy([], [])
    with pytest.raises(ValueError, match=">= 0"):
        count_accuracy([-1], [1])
