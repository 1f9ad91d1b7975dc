"""Points read off predicted masks (glus_ros/geometry.py: component_points) and the predictor's mask source."""

from __future__ import annotations

import numpy as np
import pytest

from glus_ros.geometry import component_points
from glus_ros.inference import VideoSegmenter, load_model
from glus_ros.points.coords import pixel_index, to_pixels
from glus_ros.points.predictor import PointPredictor

from helpers_model import moving_disk_clip


def _disc(mask: np.ndarray, cx: int, cy: int, r: int) -> None:
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    mask[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = True


def test_one_point_per_component_inside_it_largest_first():
    mask = np.zeros((60, 80), dtype=bool)
    _disc(mask, 15, 20, 5)
    _disc(mask, 55, 35, 12)
    mask[2, 78] = mask[3, 78] = True                       # a 2-pixel speck: below min_area
    ring = np.zeros((60, 80), dtype=bool)
    _disc(ring, 40, 30, 20)
    inner = np.zeros_like(ring)
    _disc(inner, 40, 30, 14)
    ring &= ~inner
    points = component_points(mask, min_area=4, min_fraction=0.0)
    assert len(points) == 2
    (x0, y0), (x1, y1) = points
    assert (x0 - 55) ** 2 + (y0 - 35) ** 2 <= 4 and (x1 - 15) ** 2 + (y1 - 20) ** 2 <= 4   # centres, big first
    assert len(component_points(mask, min_area=1, min_fraction=0.0)) == 3
    [(rx, ry)] = component_points(ring)
    assert ring[int(ry), int(rx)]                           # on the ring, not in its hole
    assert component_points(np.zeros((5, 5), dtype=bool)) == []


def test_components_small_against_the_largest_are_dropped():
    mask = np.zeros((60, 80), dtype=bool)
    _disc(mask, 20, 30, 12)                                 # ~450 px: the object
    _disc(mask, 60, 30, 8)                                  # ~200 px: a second object (0.44 of the largest)
    _disc(mask, 70, 8, 3)                                   # ~29 px: a stray blob (0.06 of the largest)
    points = component_points(mask)                         # default fraction 0.2
    assert len(points) == 2
    assert all(abs(x - 70) > 5 for x, _ in points)
    assert len(component_points(mask, min_fraction=0.0)) == 3
    assert len(component_points(mask, min_fraction=0.5)) == 1
    assert len(component_points(mask, min_fraction=1.0)) == 1   # the largest always stays


def test_component_points_errors():
    with pytest.raises(ValueError, match="expected an \\(H, W\\) array"):
        component_points(np.zeros((2, 5, 5), dtype=bool))
    with pytest.raises(ValueError, match="min_area must be >= 1"):
        component_points(np.zeros((5, 5), dtype=bool), min_area=0)
    with pytest.raises(ValueError, match="min_fraction must be in \\[0, 1\\]"):
        component_points(np.zeros((5, 5), dtype=bool), min_fraction=1.5)


def test_mask_source_points_lie_on_the_seg_masks():
    model = load_model("glus-tiny-synth")                   # no point head: "auto" takes the masks
    frames = moving_disk_clip(num_frames=6)
    predictor = PointPredictor(model)
    assert predictor.source == "mask"
    predicted = predictor.frame_points(frames, "the red circle")
    seg = VideoSegmenter(model).segment(frames, "the red circle")
    height, width = frames[0].shape[:2]
    assert sum(predicted.counts) > 0
    for t, points in enumerate(predicted.points):
        assert len(points) == len(component_points(seg.masks[t]))
        for point in to_pixels(points, height, width):
            row, col = pixel_index(point, height, width)
            assert seg.masks[t][row, col]
    assert np.allclose(predicted.confidence, seg.scores)
    with pytest.raises(ValueError, match="min_area must be >= 1"):
        PointPredictor(model, min_area=0)
    with pytest.raises(ValueError, match="min_fraction must be in"):
        PointPredictor(model, min_fraction=-0.1)
