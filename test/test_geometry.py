"""Geometry of masks: box, a point on the object (also for concave shapes), pinhole lifting with depth."""

from __future__ import annotations

import numpy as np
import pytest

from glus_ros.geometry import depth_from_16uc1, lift_point, mask_bbox, mask_point
from glus_ros.streaming.types import CameraIntrinsics


def test_bbox_of_rectangle_pixel_and_empty() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:9, 10:17] = True
    assert mask_bbox(mask) == (10, 5, 16, 8)
    single = np.zeros((20, 30), dtype=np.uint8)
    single[19, 29] = 255
    assert mask_bbox(single) == (29, 19, 29, 19)
    assert mask_bbox(np.zeros((4, 4), dtype=bool)) is None
    with pytest.raises(ValueError, match="shape"):
        mask_bbox(np.zeros((4, 4, 1), dtype=bool))


def test_point_is_the_centre_of_a_rectangle() -> None:
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:21, 20:41] = True  # 11 x 21, centre (30, 15)
    x, y = mask_point(mask)
    assert (x, y) == (30.0, 15.0)
    assert mask_point(np.zeros((5, 5), dtype=bool)) is None


def test_point_lies_on_a_ring_whose_centroid_is_background() -> None:
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(xx - 32, yy - 32)
    ring = (r >= 14) & (r <= 20)
    assert not ring[32, 32]  # the centroid is in the hole
    x, y = mask_point(ring)
    assert ring[int(y), int(x)]
    assert 16 <= np.hypot(x - 32, y - 32) <= 18  # the middle of the band, not its edge


def test_point_lies_on_a_c_shape() -> None:
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:45, 5:15] = True    # spine
    mask[5:15, 5:45] = True    # top arm
    mask[35:45, 5:45] = True   # bottom arm
    ys, xs = np.nonzero(mask)
    assert not mask[int(ys.mean()), int(xs.mean())]  # the centroid misses the object
    x, y = mask_point(mask)
    assert mask[int(y), int(x)]
    # at least 4 px from the background: truly inside a 10 px thick stroke
    assert mask[int(y) - 4:int(y) + 5, int(x) - 4:int(x) + 5].all()


def test_point_on_a_mask_touching_the_border_stays_inside() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[:, :7] = True  # a strip along the left border
    x, y = mask_point(mask)
    assert x == 3.0 and mask[int(y), int(x)]


INTR = CameraIntrinsics(fx=500.0, fy=400.0, cx=64.0, cy=48.0)


def test_lift_point_pinhole_values() -> None:
    depth = np.full((96, 128), 2.0, dtype=np.float32)
    x, y, z = lift_point(74.0, 58.0, depth, INTR)
    assert z == pytest.approx(2.0)
    assert x == pytest.approx((74 - 64) * 2.0 / 500)   # 0.04
    assert y == pytest.approx((58 - 48) * 2.0 / 400)   # 0.05
    x, y, z = lift_point(14.0, 8.0, depth, INTR)        # left of and above the principal point: negative
    assert (x, y) == (pytest.approx(-0.2), pytest.approx(-0.2))


def test_lift_point_uses_the_median_of_valid_depth_only() -> None:
    depth = np.zeros((10, 10), dtype=np.float32)   # 0 = invalid everywhere ...
    depth[4, 4], depth[4, 5], depth[5, 5] = 1.0, 3.0, 3.5  # ... except three readings
    depth[5, 4] = np.nan
    depth[3, 3] = np.inf
    x, y, z = lift_point(5.0, 5.0, depth, INTR, window=1)
    assert z == pytest.approx(3.0)                      # median of 1.0, 3.0, 3.5
    assert x == pytest.approx((5 - 64) * 3.0 / 500)
    assert y == pytest.approx((5 - 48) * 3.0 / 400)
    assert lift_point(5.0, 5.0, depth, INTR, window=0)[2] == pytest.approx(3.5)
    assert lift_point(0.0, 9.0, depth, INTR, window=2) is None  # only invalid pixels near the corner
    with pytest.raises(ValueError, match="outside"):
        lift_point(10.0, 2.0, depth, INTR)
    with pytest.raises(ValueError, match="window"):
        lift_point(1.0, 1.0, depth, INTR, window=-1)
    with pytest.raises(ValueError, match="focal"):
        lift_point(1.0, 1.0, depth, CameraIntrinsics(0.0, 1.0, 0.0, 0.0))


def test_depth_from_16uc1() -> None:
    raw = np.array([[0, 1000], [1500, 65535]], dtype=np.uint16)
    metres = depth_from_16uc1(raw)
    assert metres.dtype == np.float32
    np.testing.assert_allclose(metres, [[0.0, 1.0], [1.5, 65.535]], rtol=1e-6)
    with pytest.raises(ValueError, match="uint16"):
        depth_from_16uc1(raw.astype(np.float32))
    with pytest.raises(ValueError, match="uint16"):
        depth_from_16uc1(np.zeros((2, 2, 1), dtype=np.uint16))
