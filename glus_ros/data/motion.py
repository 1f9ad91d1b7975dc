"""Piecewise motions of synthetic objects and the motion facts expressions are built from.

A motion is a sequence of *steps*, one per pair of consecutive frames (T frames -> T-1 steps); each
step is a direction name or ``None`` (still). Runs of equal steps are the motion's segments. The
motion tags (``"left"``, ``"stop"``, ``"turn:up-right"``, ...) are what an expression may say about an
object; each comes with the half-open frame range ``(start, end)`` where the telling event happens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PERPENDICULAR = {
    "left": ("up", "down"), "right": ("up", "down"), "up": ("left", "right"), "down": ("left", "right"),
}

Step = str | None
# frames shown around an instantaneous event (a start, a stop, entering, leaving)
_EVENT_HALF = 2
# still steps needed before a start / after a stop for it to count
_MIN_STILL = 2


@dataclass(frozen=True)
class Run:
    """A maximal run of equal steps ``[start, end)`` (step indices)."""

    direction: Step
    start: int
    end: int


def runs(steps: Sequence[Step]) -> list[Run]:
    """Split a step sequence into maximal runs of equal direction."""
    out: list[Run] = []
    for i, step in enumerate(steps):
        if step is not None and step not in DIRECTIONS:
            raise ValueError(f"unknown motion step {step!r}; expected None or one of {tuple(DIRECTIONS)}")
        if out and out[-1].direction == step:
            out[-1] = Run(step, out[-1].start, i + 1)
        else:
            out.append(Run(step, i, i + 1))
    return out


def displacements(steps: Sequence[Step], speed: float) -> np.ndarray:
    """(T, 2) positions relative to frame 0, moving ``speed`` px per step."""
    offsets = np.zeros((len(steps) + 1, 2), dtype=np.float64)
    for i, step in enumerate(steps):
        dx, dy = DIRECTIONS[step] if step is not None else (0, 0)
        offsets[i + 1] = offsets[i] + (dx * speed, dy * speed)
    return offsets


def _around(frame: int, frames: int) -> tuple[int, int]:
    return max(0, frame - _EVENT_HALF), min(frames, frame + _EVENT_HALF)


def motion_tags(steps: Sequence[Step], inside: Sequence[bool]) -> dict[str, tuple[int, int]]:
    """All motion tags true of one object, each with its event frame range ``(start, end)``.

    ``inside[t]`` says whether the object's centre is in the image at frame t (for enter/leave).
    Tags and events:
    - ``<dir>``: moves that way at some point; event = the frames of that run (the first such run).
    - ``still``: never moves; event = the whole clip.
    - ``start``: still for a while, then moves; event = frames around the first moving step.
    - ``stop``: moves, then stays still to the end; event = frames around the stop.
    - ``turn:<a>-<b>``: a run of ``a`` directly followed by a run of ``b``; event = both runs.
    - ``enter`` / ``leave``: centre outside at the first / last frame, inside at some frame; event =
      frames around the first / last inside frame.
    """
    frames = len(steps) + 1
    if len(inside) != frames:
        raise ValueError(f"inside has {len(inside)} flags for {frames} frames")
    tags: dict[str, tuple[int, int]] = {}
    segs = runs(steps)
    moving = [r for r in segs if r.direction is not None]
    for r in moving:
        tags.setdefault(r.direction, (r.start, r.end + 1))
    if not moving:
        tags["still"] = (0, frames)
    else:
        first, last = segs[0], segs[-1]
        if first.direction is None and first.end >= _MIN_STILL:
            tags["start"] = _around(first.end + 1, frames)
        if last.direction is None and last.end - last.start >= _MIN_STILL:
            tags["stop"] = _around(last.start, frames)
        for a, b in itertools.pairwise(segs):
            if a.direction is not None and b.direction is not None:
                tags.setdefault(f"turn:{a.direction}-{b.direction}", (a.start, b.end + 1))
    shown = [t for t, flag in enumerate(inside) if flag]
    if shown and not inside[0]:
        tags["enter"] = _around(shown[0], frames)
    if shown and not inside[-1]:
        tags["leave"] = _around(shown[-1] + 1, frames)
    return tags
