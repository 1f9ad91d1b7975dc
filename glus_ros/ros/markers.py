"""RViz markers of the tracked targets in the camera optical frame (visualization_msgs/MarkerArray).

Per target with a 3D point (depth + CameraInfo): a sphere at the point (namespace ``glus/points``), its box as
a rectangle at the point's depth (``glus/boxes``: the 2D box's corners back-projected with the camera
intrinsics at that depth) and a text label above the box (``glus/labels``: id, expression, state, score).
Colours are the debug overlay's. Every array starts with DELETEALL, so targets that were lost or removed
disappear with the next frame; markers also expire after ``lifetime_s`` when the tracker stops publishing.
Without depth nothing can be placed in 3D and the array holds only the DELETEALL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glus_ros.ros.overlay import PALETTE
from glus_ros.streaming.types import CameraIntrinsics, TargetOutput

POINT_DIAMETER_M = 0.04
LINE_WIDTH_M = 0.01
TEXT_HEIGHT_M = 0.05


def box_corners(bbox: tuple[int, int, int, int], depth_m: float,
                intrinsics: CameraIntrinsics) -> list[tuple[float, float, float]]:
    """The 2D box (x_min, y_min, x_max, y_max inclusive pixels) as a closed rectangle of 5 points at ``depth_m``
    in the camera optical frame (x right, y down, z forward), pixel edges included."""
    if not depth_m > 0:
        raise ValueError(f"box depth must be positive metres, got {depth_m}")
    x0, y0, x1, y1 = bbox
    u0, v0, u1, v1 = x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5  # pixel centres -> outer pixel edges

    def lift(u: float, v: float) -> tuple[float, float, float]:
        return (u - intrinsics.cx) * depth_m / intrinsics.fx, (v - intrinsics.cy) * depth_m / intrinsics.fy, depth_m

    return [lift(u0, v0), lift(u1, v0), lift(u1, v1), lift(u0, v1), lift(u0, v0)]


def target_label(target: TargetOutput) -> str:
    text = target.target_id if not target.expression else f"{target.target_id}: {target.expression}"
    return f"{text} ({target.state} {target.score:.2f})"


def target_markers(targets: Sequence[TargetOutput], header: Any, intrinsics: CameraIntrinsics | None,
                   lifetime_s: float = 1.0) -> Any:
    """A MarkerArray for one frame's targets, stamped with the image ``header`` (its frame_id: the camera)."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    lifetime = Duration(sec=int(lifetime_s), nanosec=round((lifetime_s % 1.0) * 1e9))
    markers = [Marker(header=header, action=Marker.DELETEALL)]

    def marker(ns: str, index: int, kind: int, colour: ColorRGBA) -> Any:
        m = Marker(header=header, ns=ns, id=index, type=kind, action=Marker.ADD, color=colour, lifetime=lifetime)
        m.pose.orientation.w = 1.0
        return m

    for index, target in enumerate(targets):
        if target.point_3d is None:
            continue
        r, g, b = PALETTE[index % len(PALETTE)]
        colour = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)
        x, y, z = (float(v) for v in target.point_3d)
        sphere = marker("glus/points", index, Marker.SPHERE, colour)
        sphere.pose.position = Point(x=x, y=y, z=z)
        sphere.scale.x = sphere.scale.y = sphere.scale.z = POINT_DIAMETER_M
        markers.append(sphere)
        label_at = Point(x=x, y=y - 2 * TEXT_HEIGHT_M, z=z)
        if target.bbox is not None and intrinsics is not None:
            box = marker("glus/boxes", index, Marker.LINE_STRIP, colour)
            box.scale.x = LINE_WIDTH_M
            corners = box_corners(target.bbox, z, intrinsics)
            box.points = [Point(x=cx, y=cy, z=cz) for cx, cy, cz in corners]
            markers.append(box)
            label_at = Point(x=(corners[0][0] + corners[1][0]) / 2, y=corners[0][1] - TEXT_HEIGHT_M, z=z)
        label = marker("glus/labels", index, Marker.TEXT_VIEW_FACING, colour)
        label.pose.position = label_at
        label.scale.z = TEXT_HEIGHT_M
        label.text = target_label(target)
        markers.append(label)
    return MarkerArray(markers=markers)
