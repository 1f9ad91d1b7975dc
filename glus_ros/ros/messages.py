"""Translation between the streaming engine's plain data and glus_ros_msgs / geometry_msgs messages.

Why a module of its own: the node stays a thin shell of subscriptions and publishers, and these
conversions (including command validation) are testable without spinning anything.

Mode semantics follow ReferringCommand.msg: ``mask`` reports mask + box, ``point`` reports points
only (2D, and 3D when depth is available) with an empty mask image and an empty box, ``both``
reports everything. An empty box has ``x_max < x_min`` (0, 0, -1, -1).

A command's RegionPrompt (BOX or POINT, input-image pixels) becomes the target's ``Region``: the target
is then "track <region>" and its expression only a label. A question (expression ending in "?") gets
a grounded answer, published in ``TargetResult.answer`` / ``phrases`` on every frame; each grounded phrase is
tracked as its own TargetResult and ``GroundedPhrase.target_id`` names it (the question's id for the first
phrase, ``<id>/phrase_<k>`` for the others).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geometry_msgs.msg import Point, PointStamped
from glus_ros_msgs.msg import (
    BoundingBox2D,
    GroundedPhrase,
    ReferringCommand,
    ReferringCommandArray,
    RegionPrompt,
    TargetResult,
    TargetResultArray,
)
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from glus_ros.model.region import Region
from glus_ros.ros.image_conversion import mask_to_image
from glus_ros.streaming.types import PHRASE_ID_MARK, FrameResult, TargetOutput, TargetSpec, phrase_target_id

if TYPE_CHECKING:
    from glus_ros.streaming.engine import StreamingEngine

STATE_CODES = {"grounding": TargetResult.GROUNDING, "tracking": TargetResult.TRACKING, "lost": TargetResult.LOST}
MODE_NAMES = {
    ReferringCommand.MODE_MASK: "mask",
    ReferringCommand.MODE_POINT: "point",
    ReferringCommand.MODE_BOTH: "both",
}
ACTION_NAMES = {
    ReferringCommand.ADD: "ADD",
    ReferringCommand.REPLACE: "REPLACE",
    ReferringCommand.REMOVE: "REMOVE",
    ReferringCommand.CLEAR: "CLEAR",
}
TEXT_TARGET_ID = "target_0"  # the one target driven by the plain-text /glus/command topic
TEXT_TARGET_MODE = "both"  # so that /glus/target_point has a point to publish


def state_code(state: str) -> int:
    """Engine state name -> TargetResult constant; an unknown name is a programming error."""
    try:
        return STATE_CODES[state]
    except KeyError:
        raise ValueError(f"unknown target state {state!r}; expected one of {', '.join(STATE_CODES)}") from None


def _bbox_msg(bbox: tuple[int, int, int, int] | None) -> BoundingBox2D:
    if bbox is None:
        return BoundingBox2D(x_min=0, y_min=0, x_max=-1, y_max=-1)
    x_min, y_min, x_max, y_max = (int(v) for v in bbox)
    return BoundingBox2D(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max)


def target_to_msg(target: TargetOutput, header: Header) -> TargetResult:
    """One TargetResult stamped with the input image's header; fields filled according to the target's mode."""
    score = float(target.score)
    msg = TargetResult(
        header=header,
        target_id=target.target_id,
        expression=target.expression,
        score=score if math.isfinite(score) else 0.0,  # no NaN downstream: a model that produced one scores 0
        state=state_code(target.state),
    )
    wants_mask = target.mode in ("mask", "both")
    wants_point = target.mode in ("point", "both")
    msg.mask = mask_to_image(target.mask, header) if wants_mask else Image(header=header, encoding="mono8")
    msg.bbox = _bbox_msg(target.bbox if wants_mask else None)
    if wants_point and (target.points or target.point_2d is not None):
        points = target.points or [target.point_2d]
        msg.points_2d = [Point(x=float(x), y=float(y), z=0.0) for x, y in points
                         if math.isfinite(float(x)) and math.isfinite(float(y))]
    point_3d = finite_point_3d(target) if wants_point else None
    if point_3d is not None:
        msg.has_point_3d = True
        msg.point_3d = Point(x=point_3d[0], y=point_3d[1], z=point_3d[2])
    msg.answer = target.answer
    ids = target.phrase_target_ids
    if len(ids) != len(target.phrases):  # built by hand without ids: the engine's naming
        base = target.target_id.split(PHRASE_ID_MARK)[0]
        ids = [phrase_target_id(base, k) for k in range(len(target.phrases))]
    msg.phrases = [GroundedPhrase(text=text, start=int(start), end=int(end), target_id=phrase_id)
                   for (text, start, end), phrase_id in zip(target.phrases, ids, strict=True)]
    return msg


def frame_result_to_msg(result: FrameResult, header: Header, latency_ms: float) -> TargetResultArray:
    """All targets of one frame; ``header`` is the original image header (exact stamp, camera frame)."""
    return TargetResultArray(
        header=header,
        results=[target_to_msg(t, header) for t in result.targets],
        latency_ms=float(latency_ms),
        frames_dropped=max(0, int(result.frames_dropped)),
    )


def target_point_msg(target: TargetOutput, header: Header) -> PointStamped | None:
    """The target's 3D point in metres in the camera optical frame (``header.frame_id``) as a PointStamped; None
    without one (no depth or CameraInfo, lost, or not finite).

    A 3D topic carries metres only: tf and RViz read a PointStamped as metres, so a pixel (x, y) published here
    would be taken for a point hundreds of metres away. Pixels stay on the 2D outputs (``points_2d``, boxes).
    """
    point = finite_point_3d(target)
    if point is None:
        return None
    x, y, z = point
    return PointStamped(header=header, point=Point(x=x, y=y, z=z))


def finite_point_3d(target: TargetOutput) -> tuple[float, float, float] | None:
    """The target's 3D point as floats when it has one and every coordinate is finite, else None."""
    if target.point_3d is None:
        return None
    point = tuple(float(v) for v in target.point_3d)
    if len(point) != 3 or not all(math.isfinite(v) for v in point):
        return None
    return point[0], point[1], point[2]


def targets_snapshot_msg(specs: Sequence[TargetSpec], header: Header) -> ReferringCommandArray:
    """The whole target set as one ReferringCommandArray of ADD commands (``/glus/targets``, latched).

    Why a snapshot and not the commands themselves: a late subscriber (a recorder started later, a UI) gets the
    current set from the one latched message, whichever way each target came (topic, service, command line);
    an empty ``commands`` list means no targets.
    """
    modes = {name: code for code, name in MODE_NAMES.items()}
    commands = []
    for spec in specs:
        command = ReferringCommand(header=header, target_id=spec.target_id, expression=spec.expression,
                                   action=ReferringCommand.ADD, mode=modes[spec.mode])
        command.region = region_to_msg(spec.region)
        commands.append(command)
    return ReferringCommandArray(header=header, commands=commands)


def region_to_msg(region: Region | None) -> RegionPrompt:
    """Region -> RegionPrompt (NONE for None); the inverse of :func:`region_from_msg`."""
    if region is None:
        return RegionPrompt(type=RegionPrompt.NONE)
    if region.kind == "point":
        return RegionPrompt(type=RegionPrompt.POINT, x0=float(region.x0), y0=float(region.y0))
    return RegionPrompt(type=RegionPrompt.BOX, x0=float(region.x0), y0=float(region.y0), x1=float(region.x1),
                        y1=float(region.y1))


@dataclass
class CommandOutcome:
    """Result of applying referring commands; mirrors SetTargets.Response."""

    success: bool = True
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    target_ids: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return "; ".join(self.errors)


def region_from_msg(region: RegionPrompt) -> Region | None:
    """RegionPrompt -> Region (None for NONE); an unknown type raises ValueError (bounds are the engine's)."""
    if region.type == RegionPrompt.NONE:
        return None
    if region.type == RegionPrompt.BOX:
        return Region(float(region.x0), float(region.y0), float(region.x1), float(region.y1))
    if region.type == RegionPrompt.POINT:
        return Region.point(region.x0, region.y0)
    raise ValueError(f"unknown region type {region.type} (NONE=0, BOX=1, POINT=2)")


def command_spec(command: ReferringCommand) -> TargetSpec:
    """ADD/REPLACE command -> TargetSpec; an unknown mode or region type raises ValueError (expression and
    region checks are the engine's: it knows the image size)."""
    mode = MODE_NAMES.get(command.mode)
    if mode is None:
        raise ValueError(f"unknown mode {command.mode} (MODE_MASK=0, MODE_POINT=1, MODE_BOTH=2)")
    return TargetSpec(target_id=command.target_id.strip(), expression=command.expression, mode=mode,
                      region=region_from_msg(command.region))


def apply_command(engine: StreamingEngine, command: ReferringCommand) -> str:
    """Apply one command to ``engine``; return its target id ('' for CLEAR). Errors raise ValueError/KeyError."""
    action = command.action
    if action == ReferringCommand.CLEAR:
        engine.clear_targets()
        return ""
    if action == ReferringCommand.REMOVE:
        target_id = command.target_id.strip()
        if not target_id:
            raise ValueError("REMOVE needs a target_id")
        engine.remove_target(target_id)
        return target_id
    if action == ReferringCommand.ADD:
        return engine.add_target(command_spec(command))
    if action == ReferringCommand.REPLACE:
        spec = command_spec(command)
        if not spec.target_id:
            raise ValueError("REPLACE needs a target_id")
        engine.replace_target(spec)
        return spec.target_id
    raise ValueError(f"unknown action {action} (ADD=0, REPLACE=1, REMOVE=2, CLEAR=3)")


def _error_text(exc: Exception) -> str:
    # KeyError's str() adds quotes around the message; show the text itself
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def apply_commands(engine: StreamingEngine, commands: Sequence[ReferringCommand]) -> CommandOutcome:
    """Apply commands in order; a rejected one is reported and the others still apply (SetTargets semantics)."""
    outcome = CommandOutcome()
    for i, command in enumerate(commands):
        name = ACTION_NAMES.get(command.action, str(command.action))
        try:
            outcome.target_ids.append(apply_command(engine, command))
        except (ValueError, KeyError) as exc:
            outcome.success = False
            outcome.target_ids.append(command.target_id)
            outcome.errors.append(f"command {i} ({name} {command.target_id!r}): {_error_text(exc)}")
    return outcome


def apply_text_command(engine: StreamingEngine, text: str) -> str:
    """``/glus/command`` semantics: the expression replaces target ``target_0`` (added if absent).

    A bad expression raises ValueError and leaves the targets as they were.
    """
    spec = TargetSpec(target_id=TEXT_TARGET_ID, expression=text, mode=TEXT_TARGET_MODE)
    if any(s.target_id == TEXT_TARGET_ID for s, _ in engine.targets()):
        engine.replace_target(spec)
    else:
        engine.add_target(spec)
    return TEXT_TARGET_ID
