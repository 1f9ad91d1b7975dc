"""The tracker's results as vision_msgs detections: the standard interface of downstream perception nodes.

Grasp planners, isaac_ros and sam3_ros consume ``vision_msgs/Detection2DArray`` / ``Detection3DArray``. The
message module is passed in (``bridges.vision_msgs_module()``: vision_msgs where it imports, a Jazzy install
has it through rosdep; the PyPI wheels do not), so this conversion has no import-time ROS dependency.

Field use (vision_msgs 4.1, Jazzy):

* ``Detection2D.id``: the target id; ``results``: one ``ObjectHypothesisWithPose`` whose ``hypothesis.class_id``
  is the referring expression and ``hypothesis.score`` the mask score; ``bbox.center.position`` (x, y) the box
  centre and ``size_x`` / ``size_y`` its size, in input-image pixels (pixel edges: a one-pixel box is 1 x 1).
  A target without a box (lost, or point mode) has no Detection2D in that frame.
* ``Detection3D``: only for targets with a 3D point (depth + CameraInfo); ``bbox.center.position`` is the point
  in metres in the camera optical frame, ``size`` the 2D box back-projected at the point's depth (x, y) and 0
  along z (a single depth view has no extent along the ray); the hypothesis' pose is the same point.

Nothing non-finite is ever written: a target whose values are not all finite is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from glus_ros.streaming.types import CameraIntrinsics, TargetOutput


def _finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def _hypothesis(vm: Any, target: TargetOutput, point: tuple[float, float, float] | None = None) -> Any:
    result = vm.ObjectHypothesisWithPose()
    result.hypothesis.class_id = target.expression
    result.hypothesis.score = float(target.score)
    if point is not None:
        result.pose.pose.position.x, result.pose.pose.position.y, result.pose.pose.position.z = point
        result.pose.pose.orientation.w = 1.0
    return result


def detection_2d(vm: Any, target: TargetOutput, header: Any) -> Any | None:
    """One Detection2D for a target with a box; None without a box or with a non-finite score."""
    if target.bbox is None or not _finite([target.score]):
        return None
    x0, y0, x1, y1 = (float(v) for v in target.bbox)
    det = vm.Detection2D()
    det.header = header
    det.id = target.target_id
    det.bbox.center.position.x = (x0 + x1) / 2.0
    det.bbox.center.position.y = (y0 + y1) / 2.0
    det.bbox.size_x = x1 - x0 + 1.0
    det.bbox.size_y = y1 - y0 + 1.0
    det.results = [_hypothesis(vm, target)]
    return det


def detection_3d(vm: Any, target: TargetOutput, header: Any, intrinsics: CameraIntrinsics | None) -> Any | None:
    """One Detection3D for a target with a finite 3D point; None otherwise."""
    if target.point_3d is None or not _finite([*target.point_3d, target.score]):
        return None
    point = tuple(float(v) for v in target.point_3d)
    size_x = size_y = 0.0
    if target.bbox is not None and intrinsics is not None and point[2] > 0:
        x0, y0, x1, y1 = target.bbox
        size_x = (x1 - x0 + 1) * point[2] / intrinsics.fx
        size_y = (y1 - y0 + 1) * point[2] / intrinsics.fy
        if not _finite([size_x, size_y]):
            size_x = size_y = 0.0
    det = vm.Detection3D()
    det.header = header
    det.id = target.target_id
    det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z = point
    det.bbox.center.orientation.w = 1.0
    det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = size_x, size_y, 0.0
    det.results = [_hypothesis(vm, target, point)]
    return det


def detection_2d_array(vm: Any, targets: Sequence[TargetOutput], header: Any) -> Any:
    """Detection2DArray of every target with a box, stamped with the image header."""
    msg = vm.Detection2DArray()
    msg.header = header
    msg.detections = [d for t in targets if (d := detection_2d(vm, t, header)) is not None]
    return msg


def detection_3d_array(vm: Any, targets: Sequence[TargetOutput], header: Any,
                       intrinsics: CameraIntrinsics | None) -> Any:
    """Detection3DArray of every target with a 3D point, in the camera optical frame of ``header``."""
    msg = vm.Detection3DArray()
    msg.header = header
    msg.detections = [d for t in targets if (d := detection_3d(vm, t, header, intrinsics)) is not None]
    return msg
