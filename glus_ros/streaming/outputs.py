"""A target's per-frame output from its mask: the box, the points (one per connected component, largest first),
the representative point lifted to 3D with depth, and what the target carries (answer, phrases, grounding age)."""

from __future__ import annotations

import numpy as np

from glus_ros.geometry import component_points, lift_point, mask_bbox, mask_point
from glus_ros.streaming.tracks import TargetTrack
from glus_ros.streaming.types import StreamFrame, TargetOutput


def target_output(target: TargetTrack, mask: np.ndarray, score: float, state: str, frame: StreamFrame,
                  newest_step: int, head_points: list[tuple[float, float]] | None = None,
                  output_id: str | None = None) -> TargetOutput:
    """The output of ``target`` (or of its phrase ``output_id``) on ``frame``; ``newest_step`` is the engine step of
    that frame (the grounding age is counted from it); ``head_points`` replace the mask's points (point head)."""
    spec = target.spec
    age = None if target.grounded_step is None else newest_step - target.grounded_step
    # one point per connected component, largest first; the representative point is the largest one's
    # (a mask of specks below component_points' min_area still gets its interior point)
    mask_points = component_points(mask) or [p for p in [mask_point(mask)] if p is not None]
    point = mask_points[0] if mask_points else None
    point_3d = None
    if point is not None and frame.depth is not None and frame.intrinsics is not None:
        point_3d = lift_point(point[0], point[1], frame.depth, frame.intrinsics)
    return TargetOutput(target_id=output_id or spec.target_id, expression=spec.expression, mask=mask,
                        bbox=mask_bbox(mask), point_2d=point, point_3d=point_3d, score=score, state=state,
                        mode=spec.mode,
                        points=head_points if head_points is not None else mask_points,
                        answer=target.answer, phrases=list(target.phrases),
                        phrase_target_ids=target.phrase_ids(), grounded_seq=target.grounded_seq,
                        grounding_age=age)
