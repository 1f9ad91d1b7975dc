"""Point labels derived from masks: interior candidates, SAM 2-selected best point, per-object labels."""

import numpy as np
import pytest

from glus_ros.points.coords import pixel_index, to_pixels
from glus_ros.points.labels import (
    best_point_label,
    candidate_points,
    components_as_objects,
    mask_iou,
    object_point_labels,
    sam_point_segmenter,
)

from helpers_model import moving_disk_clip, tiny_model


def _box(h=40, w=60, r0=10, r1=31, c0=5, c1=26):
    mask = np.zeros((h, w), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _inside(mask, point):
    index = pixel_index(point, *mask.shape)
    return index is not None and bool(mask[index])


def test_candidates_lie_inside_and_start_at_the_deepest_point():
    mask = _box()
    points = candidate_points(mask, 12, np.random.default_rng(3))
    assert points[0] == (15.0, 20.0)                      # centre of the 21x21 box
    assert len(points) == len(set(points)) == 12
    assert all(_inside(mask, p) for p in points)
    tiny = np.zeros((8, 8), dtype=bool)
    tiny[2, 2:5] = True
    assert len(candidate_points(tiny, 10)) == 3            # fewer pixels than candidates: all of them


def test_candidates_favour_the_interior():
    mask = _box(h=100, w=100, r0=0, r1=100, c0=0, c1=100)  # the whole frame: the frame edge is a boundary
    points = np.array(candidate_points(mask, 200, np.random.default_rng(0))[1:])
    border = (np.minimum.reduce([points[:, 0], points[:, 1], 99 - points[:, 0], 99 - points[:, 1]]) < 10).mean()
    assert border < 0.19 * 0.8   # uniform sampling would put 19% of the points within 10 px of the edge


def test_ring_label_is_on_the_ring_not_in_its_hole():
    yy, xx = np.mgrid[:60, :60]
    radius = np.hypot(yy - 30, xx - 30)
    ring = (radius >= 12) & (radius <= 22)
    assert _inside(ring, best_point_label(ring))


def test_segment_fn_picks_the_candidate_whose_mask_matches_best():
    mask = _box()

    def fake_sam(point):
        # a point in the left third of the object gives the whole object; elsewhere a one-pixel mask
        out = np.zeros_like(mask)
        if point[0] < 12:
            out |= mask
        else:
            out[int(point[1]), int(point[0])] = True
        return out

    rng_seed = 7
    point = best_point_label(mask, 16, fake_sam, np.random.default_rng(rng_seed))
    candidates = candidate_points(mask, 16, np.random.default_rng(rng_seed))
    assert point in candidates and point[0] < 12 and candidates[0][0] >= 12   # not the default deepest point
    assert mask_iou(fake_sam(point), mask) == 1.0
    # without a segmenter the deepest interior point is the label
    assert best_point_label(mask) == candidates[0]


def test_object_labels_one_per_visible_object():
    masks = np.stack([_box(r0=0, r1=10, c0=0, c1=10), np.zeros((40, 60), dtype=bool), _box(r0=20, r1=40, c0=40, c1=60)])
    points = object_point_labels(masks)
    assert len(points) == 2 and _inside(masks[0], points[0]) and _inside(masks[2], points[1])
    normalised = object_point_labels(masks, normalised=True)
    assert all(0 <= c <= 1 for p in normalised for c in p)
    assert np.allclose(to_pixels(normalised, 40, 60), points)
    assert object_point_labels(np.zeros((0, 40, 60), dtype=bool)) == []


def test_components_split_a_union_mask():
    union = np.stack([_box(r0=0, r1=10, c0=0, c1=10) | _box(r0=20, r1=40, c0=40, c1=60), _box()])
    objects = components_as_objects(union)
    assert objects.shape == (2, 2, 40, 60)
    assert np.array_equal(objects.any(axis=0), union)
    assert objects[:, 0].reshape(2, -1).any(axis=1).all() and objects[1, 1].sum() == 0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="empty mask"):
        best_point_label(np.zeros((5, 5), dtype=bool))
    with pytest.raises(ValueError, match="HxW"):
        best_point_label(np.ones((2, 5, 5), dtype=bool))
    with pytest.raises(ValueError, match="at least one candidate"):
        candidate_points(_box(), 0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        object_point_labels(_box())
    with pytest.raises(ValueError, match="segment_fn returned"):
        best_point_label(_box(), 4, lambda p: np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        components_as_objects(_box())


def test_sam_point_segmenter_on_the_tiny_model():
    model = tiny_model()
    frame = moving_disk_clip(1)[0]
    segment = sam_point_segmenter(model, frame)
    out = segment((15.0, 36.0))
    assert out.shape == frame.shape[:2] and out.dtype == bool
    # the recipe end to end: the label is a candidate inside the ground truth, chosen by SAM 2 IoU
    yy, xx = np.mgrid[:72, :96]
    disk = (xx - 15) ** 2 + (yy - 36) ** 2 <= 100
    point = best_point_label(disk, 4, segment, np.random.default_rng(0))
    candidates = candidate_points(disk, 4, np.random.default_rng(0))
    ious = [mask_iou(segment(p), disk) for p in candidates]
    assert point == candidates[int(np.argmax(ious))]
