"""sensor_msgs <-> numpy conversions: every encoding, row padding, byte order, and the errors for bad input."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from glus_ros.ros.image_conversion import (
    UnsupportedEncodingError,
    camera_info,
    compressed_to_rgb,
    depth_to_image,
    depth_to_metres,
    float_to_stamp,
    image_to_rgb,
    intrinsics_from_camera_info,
    mask_from_image,
    mask_to_image,
    rgb_to_compressed,
    rgb_to_image,
    stamp_to_float,
)

H, W = 5, 7


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _raw(rows: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image built by hand: each row's bytes, then ``pad`` filler bytes (0xAB), as a driver may send."""
    height, width = rows.shape[:2]
    row_bytes = [r.tobytes() + b"\xab" * pad for r in rows]
    step = len(row_bytes[0])
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=b"".join(row_bytes),
    )


@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_with_and_without_row_padding(rgb: np.ndarray, pad: int) -> None:
    alpha = np.full((H, W, 1), 9, np.uint8)
    bgr = rgb[:, :, ::-1]
    cases = {
        "rgb8": rgb,
        "bgr8": bgr,
        "8UC3": bgr,
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([bgr, alpha], axis=2),
        "8UC4": np.concatenate([bgr, alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        out = image_to_rgb(_raw(np.ascontiguousarray(pixels), encoding, pad))
        assert out.dtype == np.uint8 and out.shape == (H, W, 3), encoding
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)


@pytest.mark.parametrize("pad", [0, 2])
def test_mono_encodings_are_grey_rgb(pad: int) -> None:
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 7
    for encoding in ("mono8", "8UC1"):
        out = image_to_rgb(_raw(grey, encoding, pad))
        np.testing.assert_array_equal(out, np.stack([grey] * 3, axis=2))
    # 16 bit: full range onto 0..255; multiples of 257 map exactly, in both byte orders
    values16 = grey.astype(np.uint16) * 257
    for bigendian in (False, True):
        rows = values16.astype(">u2" if bigendian else "<u2")
        out = image_to_rgb(_raw(rows, "mono16", pad * 2, bigendian))
        np.testing.assert_array_equal(out[:, :, 0], grey)
        np.testing.assert_array_equal(out[:, :, 2], grey)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_rgb_to_image_round_trip(rgb: np.ndarray, encoding: str) -> None:
    header = Header(frame_id="cam")
    header.stamp.sec = 12
    msg = rgb_to_image(rgb, encoding, header)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step == W * (4 if "a" in encoding else 3)
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 12
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_messages_survive_serialisation_and_decode_from_rosbags_types(rgb: np.ndarray) -> None:
    """The conversions read attributes only: rosbags' deserialised messages decode like rclpy's."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    padded = _raw(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", pad=5)
    decoded = typestore.deserialize_cdr(serialize_message(padded), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_to_rgb(decoded), rgb)
    depth = typestore.deserialize_cdr(
        serialize_message(depth_to_image(np.full((2, 3), 1.25, np.float32))), "sensor_msgs/msg/Image"
    )
    np.testing.assert_allclose(depth_to_metres(depth), 1.25)


def test_unknown_encoding_names_it_and_the_supported_list() -> None:
    msg = Image(height=1, width=2, encoding="yuv422", step=4, data=b"abcd")
    with pytest.raises(UnsupportedEncodingError) as info:
        image_to_rgb(msg)
    assert isinstance(info.value, ValueError)
    assert "yuv422" in str(info.value) and "rgb8" in str(info.value) and "mono16" in str(info.value)
    with pytest.raises(UnsupportedEncodingError, match="bayer_rggb8"):
        rgb_to_image(np.zeros((2, 2, 3), np.uint8), "bayer_rggb8")


def test_bad_sizes_are_errors(rgb: np.ndarray) -> None:
    good = rgb_to_image(rgb)
    short = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=bytes(good.data)[:-1])
    with pytest.raises(ValueError, match="expected step\\*height"):
        image_to_rgb(short)
    narrow = Image(height=H, width=W, encoding="rgb8", step=W * 3 - 1, data=bytes((W * 3 - 1) * H))
    with pytest.raises(ValueError, match="step"):
        image_to_rgb(narrow)
    with pytest.raises(ValueError, match="zero size"):
        image_to_rgb(Image(height=0, width=0, encoding="rgb8"))
    with pytest.raises(ValueError, match="uint8 RGB"):
        rgb_to_image(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        rgb_to_image(rgb[:, :, 0])


def test_compressed_images(rgb: np.ndarray) -> None:
    big = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_NEAREST)
    png = rgb_to_compressed(big, "png")
    assert png.format == "png"
    np.testing.assert_array_equal(compressed_to_rgb(png), big)
    smooth = np.dstack([np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))] * 3)
    jpeg = compressed_to_rgb(rgb_to_compressed(smooth, "jpeg", quality=95))
    assert jpeg.shape == smooth.shape and np.abs(jpeg.astype(int) - smooth).mean() < 3
    with pytest.raises(ValueError, match="cannot decode compressed image"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8 definitely not a jpeg"))
    with pytest.raises(ValueError, match="0 bytes"):
        compressed_to_rgb(CompressedImage(format="jpeg"))
    with pytest.raises(ValueError, match="unsupported compressed format"):
        rgb_to_compressed(rgb, "webp2")


def test_depth_decoding_millimetres_and_metres() -> None:
    mm = np.array([[0, 1, 1500], [65535, 250, 4000]], dtype=np.uint16)
    for encoding in ("16UC1", "mono16"):
        for bigendian in (False, True):
            msg = _raw(mm.astype(">u2" if bigendian else "<u2"), encoding, pad=2, bigendian=bigendian)
            out = depth_to_metres(msg)
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, mm / 1000.0, rtol=1e-6)
    metres = np.array([[0.5, np.nan], [2.25, 0.0]], dtype=np.float32)
    out = depth_to_metres(_raw(metres.astype("<f4"), "32FC1", pad=4))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(metres))
    np.testing.assert_array_equal(np.nan_to_num(out), np.nan_to_num(metres))
    with pytest.raises(UnsupportedEncodingError, match=r"rgb8.*16UC1, mono16, 32FC1"):
        depth_to_metres(rgb_to_image(np.zeros((2, 2, 3), np.uint8)))


def test_depth_encoding_round_trip_and_invalid_values() -> None:
    metres = np.array([[0.5, 1.2344, np.nan], [-1.0, 70.0, 3.0]], dtype=np.float32)
    msg = depth_to_image(metres, "16UC1")
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("16UC1", 6, 2, 3)
    np.testing.assert_allclose(depth_to_metres(msg), [[0.5, 1.234, 0.0], [0.0, 0.0, 3.0]], rtol=1e-6)
    exact = depth_to_metres(depth_to_image(metres, "32FC1"))
    np.testing.assert_array_equal(np.nan_to_num(exact, nan=-7), np.nan_to_num(metres, nan=-7))
    with pytest.raises(UnsupportedEncodingError):
        depth_to_image(metres, "32FC3")
    with pytest.raises(ValueError, match="depth array"):
        depth_to_image(np.zeros((2, 2, 2)), "16UC1")


def test_masks_are_mono8_0_255() -> None:
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    msg = mask_to_image(mask, Header(frame_id="cam"))
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("mono8", 6, "cam")
    assert set(np.frombuffer(msg.data, np.uint8).tolist()) == {0, 255}
    np.testing.assert_array_equal(mask_from_image(msg), mask)
    with pytest.raises(UnsupportedEncodingError):
        mask_from_image(rgb_to_image(np.zeros((2, 2, 3), np.uint8)))
    with pytest.raises(ValueError, match="mask"):
        mask_to_image(np.zeros((2, 2, 3), bool))


def test_camera_info_and_intrinsics() -> None:
    info = camera_info(640, 480, 500.0, 510.0, 319.5, 239.5, Header(frame_id="cam"))
    assert (info.width, info.height, info.distortion_model, info.header.frame_id) == (640, 480, "plumb_bob", "cam")
    assert list(info.d) == [0.0] * 5
    assert list(info.k) == [500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0]
    assert list(info.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert list(info.p) == [500.0, 0.0, 319.5, 0.0, 0.0, 510.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert intrinsics_from_camera_info(info) == (500.0, 510.0, 319.5, 239.5)
    with pytest.raises(ValueError, match="not calibrated"):
        intrinsics_from_camera_info(CameraInfo())
    with pytest.raises(ValueError, match="focal"):
        camera_info(640, 480, 0.0, 500.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="size"):
        camera_info(0, 480, 500.0, 500.0, 1.0, 1.0)


def test_stamps() -> None:
    stamp = float_to_stamp(12.5)
    assert (stamp.sec, stamp.nanosec) == (12, 500_000_000)
    assert stamp_to_float(stamp) == 12.5
    carry = float_to_stamp(1.9999999999)  # rounds to the next second, never nanosec == 1e9
    assert (carry.sec, carry.nanosec) == (2, 0)
    now = float_to_stamp(1_700_000_000.25)
    assert (now.sec, now.nanosec) == (1_700_000_000, 250_000_000)
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="stamp"):
            float_to_stamp(bad)


def test_depth_units_and_no_depth_conventions_reach_3d_points_correctly() -> None:
    """16UC1 millimetres and 32FC1 metres give the same 3D point; 0, NaN, +inf and -inf (REP 117) are no depth."""
    from glus_ros.geometry import lift_point
    from glus_ros.ros.image_conversion import depth_values_to_metres
    from glus_ros.streaming.types import CameraIntrinsics

    intrinsics = CameraIntrinsics(100.0, 100.0, 2.0, 2.0)
    mm = np.full((5, 5), 1250, np.uint16)
    metres = np.full((5, 5), 1.25, np.float32)
    from_mm = lift_point(3.0, 1.0, depth_to_metres(_raw(mm.astype("<u2"), "16UC1", pad=0)), intrinsics)
    from_m = lift_point(3.0, 1.0, depth_to_metres(_raw(metres.astype("<f4"), "32FC1", pad=0)), intrinsics)
    assert from_mm == pytest.approx(from_m) and from_m == pytest.approx((0.0125, -0.0125, 1.25))
    holes = np.array([[np.nan, np.inf, -np.inf, 0.0, -1.0]] * 5, np.float32)
    decoded = depth_to_metres(_raw(holes.astype("<f4"), "32FC1", pad=0))
    assert lift_point(2.0, 2.0, decoded, intrinsics) is None  # nothing valid near the point
    holes[2, 2] = 2.0
    assert lift_point(2.0, 2.0, depth_to_metres(_raw(holes.astype("<f4"), "32FC1", pad=0)), intrinsics)[2] == 2.0
    zero_mm = np.zeros((5, 5), np.uint16)
    assert lift_point(2.0, 2.0, depth_to_metres(_raw(zero_mm, "16UC1", pad=0)), intrinsics) is None
    with pytest.raises(ValueError, match=r"32FC1 depth: expected an \(H, W\) float32 array, got uint16"):
        depth_values_to_metres(mm, "32FC1")
    with pytest.raises(UnsupportedEncodingError):
        depth_values_to_metres(mm, "rgb8")
