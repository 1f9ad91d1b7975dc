"""J and F on hand-made masks; every expected value is derived by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from glus_ros.metrics import (
    bound_pixels,
    boundary_f_measure,
    boundary_map,
    disk,
    region_similarity,
    video_j_f,
)


def rect(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# 10x10 masks used by several tests.
# LEFT: columns 0..4 of every row (50 px). Its boundary map is column 4, rows 0..9 (10 px):
#   seg^east is true at c=4 (1 next to 0), seg^south is all false (rows are equal), seg^south-east
#   is true at c=4 again; the last row compares eastwards only (c=4 again); the last column is 0.
LEFT = rect((10, 10), slice(None), slice(0, 5))
# STEP: columns 0..4 in rows 0..4 and columns 0..7 in rows 5..9 (25 + 40 = 65 px).
# Boundary map (13 px): (r, 4) for r = 0..4; row 4 also has c = 5, 6, 7 (those pixels are 0 and their
# south neighbour is 1); (r, 7) for r = 5..9.
STEP = np.zeros((10, 10), dtype=bool)
STEP[0:5, 0:5] = True
STEP[5:10, 0:8] = True


def test_j_partial_overlap():
    # gt: rows 0-1, cols 0-3 (8 px); pred: rows 0-1, cols 2-5 (8 px); overlap cols 2-3 -> 4 px;
    # union = 8 + 8 - 4 = 12 -> J = 4/12 = 1/3
    gt = rect((4, 6), slice(0, 2), slice(0, 4))
    pred = rect((4, 6), slice(0, 2), slice(2, 6))
    assert region_similarity(pred, gt) == pytest.approx(1 / 3)


def test_j_void_pixels_are_excluded():
    # same masks; void = cols 4-5 removes the 4 pred-only pixels: union 8, intersection 4 -> 0.5
    gt = rect((4, 6), slice(0, 2), slice(0, 4))
    pred = rect((4, 6), slice(0, 2), slice(2, 6))
    void = rect((4, 6), slice(None), slice(4, 6))
    assert region_similarity(pred, gt, void) == pytest.approx(0.5)


def test_j_step_against_left_half():
    # LEFT is inside STEP: intersection 50, union 65 -> 10/13
    assert region_similarity(STEP, LEFT) == pytest.approx(10 / 13)


def test_j_empty_cases():
    empty = np.zeros((5, 5), dtype=bool)
    some = rect((5, 5), slice(1, 3), slice(1, 3))
    assert region_similarity(empty, empty) == 1.0  # empty union
    assert region_similarity(empty, some) == 0.0
    assert region_similarity(some, empty) == 0.0


def test_j_accepts_0_255_masks():
    gt = rect((4, 6), slice(0, 2), slice(0, 4))
    pred = rect((4, 6), slice(0, 2), slice(2, 6)).astype(np.uint8) * 255
    assert region_similarity(pred, gt) == pytest.approx(1 / 3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 6\).*\(6, 4\)"):
        region_similarity(np.zeros((4, 6)), np.zeros((6, 4)))
    with pytest.raises(ValueError, match=r"\(4, 6\).*\(6, 4\)"):
        boundary_f_measure(np.zeros((4, 6)), np.zeros((6, 4)))
    with pytest.raises(ValueError, match="void"):
        region_similarity(np.zeros((4, 6)), np.zeros((4, 6)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="HxW"):
        region_similarity(np.zeros((2, 4, 6)), np.zeros((2, 4, 6)))


def test_boundary_map_of_square():
    # 3x3 square at rows/cols 1..3 of a 6x6 image. A pixel is boundary when it differs from its east,
    # south or south-east neighbour, so the ring sits half a pixel up-left: rows 0 and 3 (cols 0..3) and
    # cols 0 and 3 (rows 0..3). Rows 4-5 and cols 4-5 have all-zero neighbourhoods.
    mask = rect((6, 6), slice(1, 4), slice(1, 4))
    expected = np.array(
        [
            [1, 1, 1, 1, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    out = boundary_map(mask)
    assert out.dtype == bool and out.shape == (6, 6)
    np.testing.assert_array_equal(out, expected)


def test_boundary_map_last_row_and_column_rules():
    # 2x2 square in the bottom-right corner of a 4x4 image.
    # (1,1),(1,2),(2,1): zeros next to a 1 to the south / south-east / east.
    # (1,3): last column compares southwards only: 0 vs seg[2,3]=1 -> 1.
    # (2,3): last column, 1 vs 1 -> 0 (an edge at the image border is not a boundary).
    # (3,1): last row compares eastwards only: 0 vs 1 -> 1; (3,2): 1 vs 1 -> 0; (3,3): corner -> 0.
    mask = rect((4, 4), slice(2, 4), slice(2, 4))
    expected = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_map_of_left_half_and_full_and_empty():
    expected = np.zeros((10, 10), dtype=bool)
    expected[:, 4] = True
    np.testing.assert_array_equal(boundary_map(LEFT), expected)
    # a full mask equals all its neighbours; the last row/column rules compare only inside the image
    assert not boundary_map(np.ones((5, 7), dtype=bool)).any()
    assert not boundary_map(np.zeros((5, 7), dtype=bool)).any()


def test_boundary_map_of_step():
    expected = np.zeros((10, 10), dtype=bool)
    expected[0:5, 4] = True
    expected[4, 5:8] = True
    expected[5:10, 7] = True
    np.testing.assert_array_equal(boundary_map(STEP), expected)


@pytest.mark.parametrize(("height", "width", "pixels"), [(480, 854, 8), (720, 1280, 12), (1080, 1920, 18)])
def test_bound_pixels_of_common_frame_sizes(height, width, pixels):
    # ceil(0.008 * diagonal): 979.7 -> 7.84 -> 8; 1468.6 -> 11.75 -> 12; 2202.9 -> 17.62 -> 18
    assert bound_pixels(height, width) == pixels


def test_bound_pixels_small_and_absolute():
    assert bound_pixels(10, 10) == 1  # 0.008 * 14.1 = 0.11 -> 1
    assert bound_pixels(10, 10, bound_th=3) == 3  # >= 1 is a pixel count
    with pytest.raises(ValueError, match=r"2\.5"):
        bound_pixels(10, 10, bound_th=2.5)
    with pytest.raises(ValueError, match="positive"):
        bound_pixels(10, 10, bound_th=0)


def test_disk_kernels():
    np.testing.assert_array_equal(disk(0), [[1]])
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    # radius 2: (±1, ±1) has 2 <= 4, (±2, ±1) has 5 > 4
    np.testing.assert_array_equal(
        disk(2),
        [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]],
    )


def test_f_within_and_beyond_tolerance():
    # LEFT's boundary is column 4; cols 0..6 has its boundary at column 6: two columns apart.
    wider = rect((10, 10), slice(None), slice(0, 7))
    assert boundary_f_measure(wider, LEFT, bound_th=2) == 1.0  # every edge pixel matched
    assert boundary_f_measure(wider, LEFT, bound_th=1) == 0.0  # none matched: P = R = 0
    assert boundary_f_measure(wider, LEFT) == 0.0  # default tolerance is 1 px on 10x10
    assert boundary_f_measure(LEFT, LEFT) == 1.0


def test_f_partial_match():
    # Tolerance 1 px (a plus-shaped disk). STEP edge (13 px) vs LEFT edge (column 4, 10 px):
    # precision: (0..4, 4) and (4, 5) lie within 1 px of column 4 -> 6/13;
    # recall: (0..4, 4) are on STEP's edge and (5, 4) is just below (4, 4) -> 6/10.
    # F = 2PR / (P + R) = (36/65) / (69/65) = 12/23.
    assert boundary_f_measure(STEP, LEFT, bound_th=1) == pytest.approx(12 / 23)
    assert boundary_f_measure(STEP, LEFT) == pytest.approx(12 / 23)
    # with 3 px every STEP edge pixel is within reach of column 4 and vice versa
    assert boundary_f_measure(STEP, LEFT, bound_th=3) == 1.0


def test_f_empty_cases():
    empty = np.zeros((10, 10), dtype=bool)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, LEFT) == 0.0
    assert boundary_f_measure(LEFT, empty) == 0.0
    full = np.ones((10, 10), dtype=bool)
    assert boundary_f_measure(full, full) == 1.0  # both boundary maps are empty
    assert boundary_f_measure(LEFT, full) == 0.0  # only the ground truth's is empty


def test_f_void_clears_both_masks():
    # void over cols 5..9 leaves STEP equal to LEFT: same boundary -> F = 1, and J = 1
    void = rect((10, 10), slice(None), slice(5, 10))
    assert boundary_f_measure(STEP, LEFT, void=void) == 1.0
    assert region_similarity(STEP, LEFT, void) == 1.0


def test_video_j_f_means_over_frames():
    # frame 0: J 10/13, F 12/23; frame 1: both empty -> J 1, F 1
    empty = np.zeros((10, 10), dtype=bool)
    j, f = video_j_f(np.stack([STEP, empty]), np.stack([LEFT, empty]))
    assert j == pytest.approx((10 / 13 + 1) / 2)
    assert f == pytest.approx((12 / 23 + 1) / 2)


def test_video_j_f_bad_input():
    with pytest.raises(ValueError, match=r"\(2, 10, 10\).*\(3, 10, 10\)"):
        video_j_f(np.zeros((2, 10, 10)), np.zeros((3, 10, 10)))
    with pytest.raises(ValueError, match="T, H, W"):
        video_j_f(np.zeros((10, 10)), np.zeros((10, 10)))
    with pytest.raises(ValueError, match="at least one frame"):
        video_j_f(np.zeros((0, 10, 10)), np.zeros((0, 10, 10)))
