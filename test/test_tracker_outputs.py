"""The tracker's RViz markers, its /diagnostics status and its parameter rules, without spinning anything.

(The same outputs across processes, from an installed tracker_node: test_packaging.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from glus_ros.ros.diagnostics import HealthMonitor, HealthReport, health_level, tracker_status
from glus_ros.ros.markers import box_corners, target_markers
from glus_ros.ros.tracker_params import PARAMETERS, PARAMETERS_SPEC, applies_at, change_refusal, check_parameter
from glus_ros.streaming.types import CameraIntrinsics, TargetOutput

INTR = CameraIntrinsics(fx=500.0, fy=400.0, cx=64.0, cy=48.0)


def _target(target_id: str, point_3d: tuple | None, bbox: tuple | None = (10, 20, 29, 39)) -> TargetOutput:
    return TargetOutput(target_id=target_id, expression="the red mug", mask=np.zeros((96, 128), bool), bbox=bbox,
                        point_2d=(20.0, 30.0), point_3d=point_3d, score=0.875, state="tracking", mode="both")


def test_box_corners_back_project_the_pixel_edges_at_the_depth() -> None:
    corners = box_corners((10, 20, 29, 39), 2.0, INTR)
    assert len(corners) == 5 and corners[0] == corners[-1]
    (x0, y0, z0), (x1, _, _), (_, y2, _) = corners[0], corners[1], corners[2]
    assert (x0, y0, z0) == pytest.approx(((9.5 - 64) * 2 / 500, (19.5 - 48) * 2 / 400, 2.0))
    assert x1 - x0 == pytest.approx(20 * 2 / 500) and y2 - y0 == pytest.approx(20 * 2 / 400)  # 20 px wide, 20 high
    with pytest.raises(ValueError, match="positive"):
        box_corners((0, 0, 1, 1), 0.0, INTR)


def test_markers_of_3d_targets_in_the_camera_frame() -> None:
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker

    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec = 7
    targets = [_target("mug", (0.1, -0.2, 2.0)), _target("flat", None), _target("nobox", (0.0, 0.0, 1.0), None)]
    msg = target_markers(targets, header, INTR, lifetime_s=1.5)
    first, *markers = msg.markers
    assert first.action == Marker.DELETEALL  # lost / removed targets vanish with the next frame
    assert all(m.header.frame_id == "camera_color_optical_frame" and m.header.stamp.sec == 7 for m in msg.markers)
    by_kind = {(m.ns, m.id): m for m in markers}
    assert set(by_kind) == {("glus/points", 0), ("glus/boxes", 0), ("glus/labels", 0),
                            ("glus/points", 2), ("glus/labels", 2)}  # no 3D point: nothing; no box: no box
    sphere = by_kind["glus/points", 0]
    assert sphere.type == Marker.SPHERE and sphere.action == Marker.ADD
    assert (sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z) == pytest.approx((0.1, -0.2, 2.0))
    assert (sphere.lifetime.sec, sphere.lifetime.nanosec) == (1, 500_000_000)
    box = by_kind["glus/boxes", 0]
    assert box.type == Marker.LINE_STRIP
    np.testing.assert_allclose([(p.x, p.y, p.z) for p in box.points], box_corners((10, 20, 29, 39), 2.0, INTR))
    label = by_kind["glus/labels", 0]
    assert label.type == Marker.TEXT_VIEW_FACING and label.text == "mug: the red mug (tracking 0.88)"
    assert label.pose.position.y < box.points[0].y  # above the box (y points down)
    assert (sphere.color.r, sphere.color.g, sphere.color.b) == pytest.approx((1.0, 64 / 255, 32 / 255))
    assert by_kind["glus/points", 2].color != sphere.color
    without_intrinsics = target_markers(targets[:1], header, None)
    assert [m.ns for m in without_intrinsics.markers[1:]] == ["glus/points", "glus/labels"]


def test_health_monitor_rates_and_latency_over_the_window() -> None:
    monitor = HealthMonitor(window_s=5.0)
    first = monitor.sample(100.0, {"frames_in": 0, "frames_processed": 0, "frames_dropped": 0, "errors": 0})
    assert first.window_s == 0.0 and first.input_hz == 0.0 and first.latency_ms["p50"] is None
    for k in range(1, 11):  # 10 s at 30 frames in / 20 processed / 10 dropped per second
        for j in range(20):
            monitor.record_result(100.0 + k - 1 + j / 20, 40.0 + j)
        report = monitor.sample(100.0 + k, {"frames_in": 30 * k, "frames_processed": 20 * k,
                                            "frames_dropped": 10 * k, "errors": 0})
    assert report.window_s == pytest.approx(5.0)
    assert report.input_hz == pytest.approx(30.0) and report.processed_hz == pytest.approx(20.0)
    assert report.dropped_fraction == pytest.approx(1 / 3)
    assert report.published_hz == pytest.approx(20.0, abs=0.5)
    assert report.latency_ms["p50"] == pytest.approx(49.5, abs=0.6) and report.latency_ms["max"] == 59.0
    assert report.totals == {"frames_in": 300, "frames_processed": 200, "frames_dropped": 100, "errors": 0}
    stalled = {"frames_in": 300, "frames_processed": 200, "frames_dropped": 100, "errors": 2}
    later = monitor.sample(111.0, stalled)  # the window 106..111 saw frames until 110 and two failures
    assert later.input_hz == pytest.approx(4 * 30 / 5) and later.errors_in_window == 2
    quiet = monitor.sample(116.0, stalled)
    assert quiet.input_hz == 0.0 and quiet.errors_in_window == 0 and quiet.latency_ms["p50"] is None
    with pytest.raises(ValueError, match="window_s"):
        HealthMonitor(0.0)


def _report(**changes: object) -> HealthReport:
    base = dict(window_s=5.0, input_hz=30.0, processed_hz=25.0, published_hz=25.0, dropped_fraction=0.1,
                latency_ms={"p50": 30.0, "p95": 45.0, "max": 50.0}, errors_in_window=0)
    return HealthReport(**{**base, **changes})


def test_health_levels() -> None:
    assert health_level(_report(), "active", "") == (0, "tracking at 25.0 Hz")
    assert health_level(_report(input_hz=0.0), "active", "")[0] == 1
    assert health_level(_report(input_hz=0.0, window_s=0.0), "active", "") == (0, "active (first sample: no rates yet)")
    assert health_level(_report(input_hz=0.0), "inactive", "") == (0, "inactive (configured, not tracking)")
    assert health_level(_report(dropped_fraction=0.6), "active", "")[1].startswith("dropping 60% of the frames")
    assert health_level(_report(errors_in_window=3), "active", "") == (2, "3 frames failed in the last 5 s")
    assert health_level(_report(), "unconfigured", "FileNotFoundError: no model") == (
        2, "unconfigured: FileNotFoundError: no model")


def test_diagnostic_status_message() -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    status = tracker_status("tracker: language tracker", "cuda:0", _report(latency_ms={"p50": 30.0, "p95": None,
                                                                                       "max": 50.0}),
                            "active", "", {"model_state": "loaded on cuda:0", "targets": 2})
    assert status.level == DiagnosticStatus.OK and status.hardware_id == "cuda:0"
    values = {kv.key: kv.value for kv in status.values}
    assert values["input_rate_hz"] == "30.00" and values["latency_p50_ms"] == "30.00"
    assert values["latency_p95_ms"] == "n/a" and values["model_state"] == "loaded on cuda:0"
    assert values["targets"] == "2" and values["lifecycle_state"] == "active"
    warn = tracker_status("t", "cpu", _report(input_hz=0.0), "active", "", {})
    assert warn.level == DiagnosticStatus.WARN


def test_every_parameter_says_when_it_applies() -> None:
    assert {applies_at(name) for name in PARAMETERS} == {"live", "activate", "configure"}
    for name, (_, description) in PARAMETERS.items():
        assert description.endswith(f"[applies: {PARAMETERS_SPEC[name][1]}]"), name
    assert change_refusal("reground_every", "active") is None
    assert change_refusal("image_topic", "inactive") is None and change_refusal("model", "unconfigured") is None
    assert "deactivate first" in change_refusal("image_topic", "active")
    assert "clean up first" in change_refusal("model", "inactive") and "clean up first" in change_refusal(
        "device", "active")
    assert check_parameter("target_frame", " base_link") is not None and check_parameter("target_frame", "") is None


def test_health_monitor_counts_received_images_and_their_age() -> None:
    """The node's image callbacks record each camera image and how old it was (transport + executor delay), so a
    frame lost before the engine shows where it went (benchmarks/ros_throughput.py reads these)."""
    monitor = HealthMonitor(window_s=5.0)
    for k in range(30):
        monitor.record_image(100.0 + k / 10, 10.0 + k)
    report = monitor.sample(103.0, {"frames_in": 30, "frames_processed": 30, "frames_dropped": 0, "errors": 0})
    assert report.images_received == 30
    assert report.image_age_ms["p50"] == pytest.approx(24.5) and report.image_age_ms["p95"] > 35.0
    later = monitor.sample(120.0, {"frames_in": 30, "frames_processed": 30, "frames_dropped": 0, "errors": 0})
    assert later.images_received == 30 and later.image_age_ms["p50"] is None  # a running total; ages age out


def test_image_messages_are_built_from_one_copy_of_the_pixels() -> None:
    """rgb_to_image / mask_to_image hand rosidl an array.array it keeps as is (check_fields): the message class
    would otherwise copy a 640x480 frame element by element (~6 ms), and the bytes must still be the pixels."""
    import array

    from glus_ros.ros.image_conversion import mask_to_image, rgb_to_image

    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb)
    assert isinstance(msg.data, array.array) and bytes(msg.data) == rgb.tobytes()
    assert (msg.width, msg.height, msg.step, msg.encoding) == (64, 48, 64 * 3, "rgb8")
    mask = rgb[:, :, 0] > 128
    out = mask_to_image(mask)
    assert bytes(out.data) == (mask.astype(np.uint8) * 255).tobytes() and out.encoding == "mono8"
