"""Which library converts images, pairs colour with depth and transforms points (glus_ros/ros/bridges.py).

This machine has no cv_bridge, message_filters or tf2_ros (no PyPI wheels): the project's own conversion and
sync are the fallback, tested here as they are. The selection is tested with stand-in modules
(helpers_standins.py) written into tmp_path and put first on sys.path: small, honest implementations of the
real packages' Python API
(``cv_bridge.CvBridge.imgmsg_to_cv2``, ``message_filters.SimpleFilter`` / ``ApproximateTimeSynchronizer``,
``tf2_ros.Buffer`` / ``TransformListener`` / ``TransformException``), so the adapters are exercised against
the calls they make on a real ROS 2 Jazzy install.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from glus_ros.ros import bridges
from glus_ros.ros.image_conversion import UnsupportedEncodingError, depth_to_image, depth_to_metres, rgb_to_image

from helpers_standins import CV_BRIDGE, MESSAGE_FILTERS, TF2_ROS, install_stand_in


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """install_stand_in(name, code) for this test."""
    return lambda name, code: install_stand_in(tmp_path / "stand_ins", monkeypatch, name, code)


def _absent(name: str) -> None:
    module, _ = bridges.optional_module(name)
    if module is not None:
        pytest.skip(f"{name} is installed here: the fallback is not what runs")


def test_fallbacks_when_the_ros_libraries_are_absent() -> None:
    for name in ("cv_bridge", "message_filters", "tf2_ros"):
        _absent(name)
    decoder = bridges.image_decoder()
    assert decoder.backend == "glus_ros" and "cv_bridge is not installed" in decoder.reason
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(decoder.rgb(rgb_to_image(rgb, "bgr8")), rgb)
    with pytest.raises(UnsupportedEncodingError):
        decoder.depth_metres(rgb_to_image(rgb))
    sync, backend, reason = bridges.colour_depth_sync(("image", "depth"), 0.05, 10)
    assert backend == "glus_ros" and "message_filters is not installed" in reason
    assert sync.push("image", 1.0, "a") == [] and sync.push("depth", 1.001, "b") == []
    assert [m.items for m in sync.push("image", 1.033, "c")] == [("a", "b")]  # settled once a later image came
    module, why = bridges.tf_module()
    assert module is None and "tf2_ros is not installed" in why


def test_cv_bridge_is_used_where_it_imports(stand_in) -> None:
    fake = stand_in("cv_bridge", CV_BRIDGE)
    decoder = bridges.image_decoder()
    assert decoder.backend == "cv_bridge" and decoder.reason == ""
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decoder.rgb(rgb_to_image(rgb, "bgr8")), rgb)
    metres = np.array([[0.0, 1.5], [np.nan, 2.25]], np.float32)
    np.testing.assert_allclose(decoder.depth_metres(depth_to_image(metres, "16UC1")), [[0, 1.5], [0, 2.25]])
    same = decoder.depth_metres(depth_to_image(metres, "32FC1"))
    np.testing.assert_array_equal(np.isnan(same), np.isnan(metres))
    assert fake.calls == [("bgr8", "rgb8"), ("16UC1", "passthrough"), ("32FC1", "passthrough")]
    # the builtin decoders agree with the bridge on the same messages
    np.testing.assert_allclose(depth_to_metres(depth_to_image(metres, "16UC1")), [[0, 1.5], [0, 2.25]])
    with pytest.raises(ValueError, match=r"cv_bridge cannot convert a 'rgba8' image to rgb8: unsupported encoding"):
        decoder.rgb(rgb_to_image(rgb, "rgba8"))
    with pytest.raises(UnsupportedEncodingError, match="16UC1, mono16, 32FC1"):  # checked before the bridge
        decoder.depth_metres(rgb_to_image(rgb))
    assert len(fake.calls) == 4


def test_a_broken_cv_bridge_falls_back_with_its_reason(stand_in) -> None:
    stand_in("cv_bridge", "raise AttributeError('np.float was removed in numpy 2')\n")
    decoder = bridges.image_decoder()
    assert decoder.backend == "glus_ros"
    assert decoder.reason == "cv_bridge failed to import: AttributeError: np.float was removed in numpy 2"


def test_message_filters_pairs_colour_and_depth_where_it_imports(stand_in) -> None:
    fake = stand_in("message_filters", MESSAGE_FILTERS)
    sync, backend, reason = bridges.colour_depth_sync(("image", "depth"), 0.05, 10)
    assert (backend, reason) == ("message_filters", "") and sync.stats is None
    assert sync.push("image", 100.25, ("header", "rgb")) == []
    (match,) = sync.push("depth", 100.27, "depth array")
    assert match.names == ("image", "depth") and match.stamps == (100.25, 100.27)
    assert match.item("image") == ("header", "rgb") and match.item("depth") == "depth array"
    assert fake.seen == [(0, 100, 250_000_000), (1, 100, 270_000_000)]  # real builtin_interfaces stamps
    assert sync.push("depth", 101.0, "late depth") == []  # no image within slop yet
    with pytest.raises(ValueError, match="unknown sync input 'ir'"):
        sync.push("ir", 1.0, None)


def test_quaternion_rotation() -> None:
    s = math.sqrt(0.5)
    np.testing.assert_allclose(bridges.rotate((0, 0, s, s), (1, 0, 0)), (0, 1, 0), atol=1e-12)    # yaw 90
    np.testing.assert_allclose(bridges.rotate((s, 0, 0, s), (0, 1, 0)), (0, 0, 1), atol=1e-12)    # roll 90
    np.testing.assert_allclose(bridges.rotate((0, 0, 0, 2.0), (1, 2, 3)), (1, 2, 3))            # normalised
    np.testing.assert_allclose(bridges.rotate((0, 0, 1, 0), (1, 2, 3)), (-1, -2, 3), atol=1e-12)  # yaw 180
    with pytest.raises(ValueError, match="no direction"):
        bridges.rotate((0, 0, 0, 0), (1, 0, 0))


def test_tf2_point_transformer_with_the_stand_in(stand_in) -> None:
    from builtin_interfaces.msg import Time

    stand_in("tf2_ros", TF2_ROS)
    module, reason = bridges.tf_module()
    assert module is not None and reason == ""
    transformer = bridges.PointTransformer(module, node="the node")
    assert transformer.listener.node == "the node" and transformer.listener.buffer is transformer.buffer
    x, y, z = transformer.transform((0.5, 0.25, 2.0), "camera", "base_link", Time(sec=3, nanosec=5))
    assert (x, y, z) == pytest.approx((1.0 - 0.25, 0.5, 2.0))
    assert transformer.buffer.lookups == [("base_link", "camera", 3_000_000_005)]
    with pytest.raises(LookupError, match=r"no transform camera -> map at the image stamp: \"map\" passed"):
        transformer.transform((0.0, 0.0, 1.0), "camera", "map", Time(sec=3))
