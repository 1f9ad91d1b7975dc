"""The tracker's ROS-free interop pieces: per-kind error throttling, vision_msgs detections (through a stand-in
vision_msgs with Jazzy 4.1's field names, as cv_bridge is tested), topic names for target ids, intrinsics checks."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glus_ros.ros.input_errors import InputErrorLog
from glus_ros.streaming.types import CameraIntrinsics, TargetOutput

# vision_msgs 4.1 (Jazzy) message layout, fields only; __slots__ make a misspelt field an AttributeError
VISION_MSGS = '''
from geometry_msgs.msg import Pose, PoseWithCovariance, Vector3
from std_msgs.msg import Header


class _Msg:
    __slots__ = ()

    def __init__(self, **kwargs):
        for name, make in self._fields:
            setattr(self, name, kwargs.pop(name) if name in kwargs else make())
        if kwargs:
            raise AttributeError(f"{type(self).__name__} has no fields {sorted(kwargs)}")


class Point2D(_Msg):
    __slots__ = ("x", "y")
    _fields = (("x", float), ("y", float))


class Pose2D(_Msg):
    __slots__ = ("position", "theta")
    _fields = (("position", Point2D), ("theta", float))


class BoundingBox2D(_Msg):
    __slots__ = ("center", "size_x", "size_y")
    _fields = (("center", Pose2D), ("size_x", float), ("size_y", float))


class BoundingBox3D(_Msg):
    __slots__ = ("center", "size")
    _fields = (("center", Pose), ("size", Vector3))


class ObjectHypothesis(_Msg):
    __slots__ = ("class_id", "score")
    _fields = (("class_id", str), ("score", float))


class ObjectHypothesisWithPose(_Msg):
    __slots__ = ("hypothesis", "pose")
    _fields = (("hypothesis", ObjectHypothesis), ("pose", PoseWithCovariance))


class Detection2D(_Msg):
    __slots__ = ("header", "results", "bbox", "id")
    _fields = (("header", Header), ("results", list), ("bbox", BoundingBox2D), ("id", str))


class Detection2DArray(_Msg):
    __slots__ = ("header", "detections")
    _fields = (("header", Header), ("detections", list))


class Detection3D(_Msg):
    __slots__ = ("header", "results", "bbox", "id")
    _fields = (("header", Header), ("results", list), ("bbox", BoundingBox3D), ("id", str))


class Detection3DArray(_Msg):
    __slots__ = ("header", "detections")
    _fields = (("header", Header), ("detections", list))
'''


@pytest.fixture
def vision_msgs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    package = tmp_path / "stand_ins" / "vision_msgs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "msg.py").write_text(textwrap.dedent(VISION_MSGS))
    monkeypatch.syspath_prepend(str(tmp_path / "stand_ins"))
    for name in ("vision_msgs", "vision_msgs.msg"):
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    from glus_ros.ros import bridges

    module, reason = bridges.vision_msgs_module()
    assert module is not None, reason
    return module


def _target(target_id: str, bbox: tuple | None, point_3d: tuple | None, score: float = 0.8) -> TargetOutput:
    return TargetOutput(target_id=target_id, expression=f"the {target_id}", mask=np.zeros((4, 4), bool), bbox=bbox,
                        point_2d=None, point_3d=point_3d, score=score, state="tracking", mode="both")


def test_error_log_throttles_each_kind_on_its_own() -> None:
    now = [100.0]
    log = InputErrorLog(period_s=5.0, clock=lambda: now[0])
    assert log.record("image", "bad encoding") == "bad encoding [image: 1 so far]"
    now[0] += 1.0
    assert log.record("image", "bad encoding") is None           # same kind within the window
    assert log.record("command", "empty expression") is not None  # another kind is not hidden by it
    assert log.record("image", "bad encoding") is None
    now[0] += 4.5
    line = log.record("image", "bad encoding")
    assert line == "bad encoding [image: 4 so far; 2 more image errors not logged]"
    assert log.counts == {"image": 4, "command": 1} and log.total() == 5 and log.last_text == "bad encoding"
    with pytest.raises(ValueError, match="kind"):
        log.record("", "x")
    with pytest.raises(ValueError, match="period_s"):
        InputErrorLog(period_s=float("nan"))


def test_node_logs_every_kind_from_its_own_throttle() -> None:
    """The node keeps no throttle per call site: _input_error goes through InputErrorLog (and rclpy's
    throttle_duration_sec appears nowhere in it)."""
    import inspect

    from glus_ros.ros.tracker_node import TrackerNode

    source = inspect.getsource(TrackerNode._input_error)
    assert "InputErrorLog" in inspect.getsource(TrackerNode.__init__) and "throttle_duration_sec" not in source


def test_detections_use_jazzy_field_names(vision_msgs: Any) -> None:
    from std_msgs.msg import Header

    from glus_ros.ros.detections import detection_2d_array, detection_3d_array

    header = Header(frame_id="cam")
    intrinsics = CameraIntrinsics(fx=500.0, fy=250.0, cx=64.0, cy=48.0)
    targets = [_target("mug", (10, 20, 29, 59), (0.1, -0.2, 2.0), 0.9),
               _target("lost", None, None, 0.1),
               _target("flat", (0, 0, 0, 0), None, 0.5)]
    det2d = detection_2d_array(vision_msgs, targets, header)
    assert det2d.header is header and [d.id for d in det2d.detections] == ["mug", "flat"]
    mug = det2d.detections[0]
    assert (mug.bbox.center.position.x, mug.bbox.center.position.y) == (19.5, 39.5)
    assert (mug.bbox.size_x, mug.bbox.size_y) == (20.0, 40.0)
    (hypothesis,) = mug.results
    assert hypothesis.hypothesis.class_id == "the mug" and hypothesis.hypothesis.score == pytest.approx(0.9)
    assert (det2d.detections[1].bbox.size_x, det2d.detections[1].bbox.size_y) == (1.0, 1.0)

    det3d = detection_3d_array(vision_msgs, targets, header, intrinsics)
    (mug3d,) = det3d.detections  # only targets with a 3D point
    assert mug3d.id == "mug"
    centre = mug3d.bbox.center.position
    assert (centre.x, centre.y, centre.z) == pytest.approx((0.1, -0.2, 2.0))
    assert (mug3d.bbox.size.x, mug3d.bbox.size.y, mug3d.bbox.size.z) == pytest.approx((20 * 2.0 / 500, 40 * 2.0 / 250,
                                                                                       0.0))
    pose = mug3d.results[0].pose.pose
    assert (pose.position.z, pose.orientation.w) == (2.0, 1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_detections_never_carry_non_finite_values(vision_msgs: Any, bad: float) -> None:
    from std_msgs.msg import Header

    from glus_ros.ros.detections import detection_2d_array, detection_3d_array

    header = Header(frame_id="cam")
    intrinsics = CameraIntrinsics(fx=500.0, fy=500.0, cx=64.0, cy=48.0)
    targets = [_target("nan_point", (1, 1, 5, 5), (bad, 0.0, 1.0)), _target("nan_score", (1, 1, 5, 5), None, bad),
               _target("ok", (1, 1, 5, 5), (0.0, 0.0, 1.0))]
    det2d = detection_2d_array(vision_msgs, targets, header)
    det3d = detection_3d_array(vision_msgs, targets, header, intrinsics)
    assert [d.id for d in det2d.detections] == ["nan_point", "ok"]
    assert [d.id for d in det3d.detections] == ["ok"]
    for det in [*det2d.detections, *det3d.detections]:
        values = [det.results[0].hypothesis.score]
        if hasattr(det.bbox, "size_x"):
            values += [det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y]
        else:
            c, s = det.bbox.center.position, det.bbox.size
            values += [c.x, c.y, c.z, s.x, s.y, s.z]
        assert all(math.isfinite(v) for v in values)


def test_without_vision_msgs_the_reason_is_given() -> None:
    from glus_ros.ros import bridges

    if "vision_msgs" in sys.modules or bridges.optional_module("vision_msgs.msg")[0] is not None:
        pytest.skip("vision_msgs is installed here")
    module, reason = bridges.vision_msgs_module()
    assert module is None and "vision_msgs" in reason


@pytest.mark.parametrize(("target_id", "token"), [
    ("target_0", "target_0"), ("left cup", "left_cup"), ("q/phrase_1", "q/phrase_1"), ("3d-mug", "_3d_mug"),
    ("mug//x", "mug/x"), ("ä", "_"), ("", "_"),
])
def test_target_ids_become_valid_topic_tokens(target_id: str, token: str) -> None:
    from rclpy.validate_topic_name import validate_topic_name

    from glus_ros.ros.tracker_node import TARGET_POINTS_PREFIX, topic_token

    assert topic_token(target_id) == token
    validate_topic_name(f"/{TARGET_POINTS_PREFIX}/{token}")  # raises for an invalid name


@pytest.mark.parametrize("k", [
    [float("nan"), 0, 32, 0, 500, 24, 0, 0, 1],   # NaN fx
    [500, 0, float("nan"), 0, 500, 24, 0, 0, 1],  # NaN principal point (the case)
    [500, 0, 32, 0, float("inf"), 24, 0, 0, 1],   # inf fy
    [0, 0, 32, 0, 500, 24, 0, 0, 1],               # zero fx
    [-500, 0, 32, 0, 500, 24, 0, 0, 1],            # negative fx
    [0] * 9,                                       # uncalibrated
])
def test_camera_info_with_unusable_intrinsics_is_refused(k: list) -> None:
    from sensor_msgs.msg import CameraInfo

    from glus_ros.ros.image_conversion import intrinsics_from_camera_info

    with pytest.raises(ValueError, match="CameraInfo K"):
        intrinsics_from_camera_info(CameraInfo(k=[float(v) for v in k]))
    with pytest.raises(ValueError, match="intrinsics"):
        CameraIntrinsics(*(float(v) for v in (k[0], k[4], k[2], k[5])))


def test_lift_point_never_returns_non_finite_metres() -> None:
    from glus_ros.geometry import lift_point

    intrinsics = CameraIntrinsics(fx=1e-300, fy=1e-300, cx=0.0, cy=0.0)  # finite, positive, absurd
    depth = np.full((4, 4), 3.0e38, np.float32)
    assert lift_point(3.0, 3.0, depth, intrinsics) is None
    for value in (np.nan, np.inf, 0.0, -1.0):
        assert lift_point(1.0, 1.0, np.full((4, 4), value, np.float32), CameraIntrinsics(1.0, 1.0, 0.0, 0.0)) is None
