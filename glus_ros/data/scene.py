"""Random scenes of the synthetic benchmark: which objects, how they move, where they are.

A scene is built to be hard the way MeViS is: most scenes hold a *look-alike group* (same colour, shape
and size) whose members behave identically except during one short window (one moves left while the
other stays, one stops while the other goes on, one turns...), so only a model that sees that window
can tell them apart. Other objects add clutter: they may enter or leave the frame or sit across a
look-alike's path to occlude it. Everything is drawn from the ``rng`` passed in, so a seed fixes a scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glus_ros.data.config import SynthConfig
from glus_ros.data.motion import DIRECTIONS, PERPENDICULAR, Step, displacements
from glus_ros.data.shapes import SHAPES, shape_extent

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (40, 170, 65),
    "blue": (45, 85, 220),
    "yellow": (230, 205, 40),
}
DEPTH_RANGE = (0.8, 3.0)  # metres, objects; the background plane lies behind
_DIRS = tuple(DIRECTIONS)
_COLOUR_JITTER = 14
_PLACEMENT_TRIES = 256


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One object: what it looks like, how far it is, and its centre (x, y) in px at every frame."""

    obj_id: int
    colour: str
    rgb: tuple[int, int, int]
    shape: str
    radius: float
    depth: float
    steps: tuple[Step, ...]
    centres: np.ndarray  # (T, 2) float64, x then y, in px; may lie outside the image
    group: int | None  # look-alike group id (members share colour, shape and motion outside one window)

    @property
    def reach(self) -> float:
        return shape_extent(self.shape, self.radius)

    def inside(self, width: int, height: int) -> list[bool]:
        """Per frame, whether the centre is in the image."""
        x, y = self.centres[:, 0], self.centres[:, 1]
        return [bool(v) for v in (x >= 0) & (x < width) & (y >= 0) & (y < height)]


@dataclass(frozen=True, eq=False)
class Scene:
    height: int
    width: int
    frames: int
    objects: tuple[SceneObject, ...]
    scenario: str  # how the look-alike group differs ("move", "start", "stop", "turn", "size") or "none"


@dataclass
class _Plan:
    """An object before placement."""

    colour: str
    rgb: tuple[int, int, int]
    shape: str
    radius: float
    steps: tuple[Step, ...]
    speed: float
    group: int | None = None
    mode: str = "inside"  # "inside" | "enter" | "leave"
    occludes: _Plan | None = None  # the planned object whose path it must partly cover (or hide behind)


def _window_bounds(n_steps: int) -> tuple[int, int]:
    """Shortest and longest telling window, in steps: a quarter to half of the clip."""
    low = max(3, n_steps // 4)
    return low, max(low, n_steps // 2)


def _steps(n_steps: int, spans: list[tuple[int, int, Step]]) -> tuple[Step, ...]:
    out: list[Step] = [None] * n_steps
    for start, end, direction in spans:
        out[start:end] = [direction] * (end - start)
    return tuple(out)


def _group_motion(
    rng: np.random.Generator, scenario: str, members: int, n_steps: int
) -> list[tuple[Step, ...]]:
    """Steps of each look-alike; member 0 is the one the telling window singles out."""
    low, high = _window_bounds(n_steps)
    d = str(rng.choice(_DIRS))
    if scenario == "move":  # all still; in one window the target moves, others stay or go elsewhere
        length = int(rng.integers(low, high + 1))
        a = int(rng.integers(0, n_steps - length + 1))
        out = [_steps(n_steps, [(a, a + length, d)])]
        for _ in range(members - 1):
            other = None if rng.random() < 0.5 else str(rng.choice([x for x in _DIRS if x != d]))
            out.append(_steps(n_steps, [(a, a + length, other)]))
        return out
    if scenario == "start":  # all still; late in the clip the target sets off
        a = int(rng.integers(max(2, round(0.4 * n_steps)), n_steps - low + 1))
        return [_steps(n_steps, [(a, n_steps, d)])] + [_steps(n_steps, [])] * (members - 1)
    if scenario == "stop":  # all move together; the target stops, the others go on to the end
        a = int(rng.integers(0, min(3, n_steps - 3 - low)))
        b = int(rng.integers(a + low + 1, n_steps - 2))  # moves in step with the others for >= 1 frame pair
        return [_steps(n_steps, [(a, b, d)])] + [_steps(n_steps, [(a, n_steps, d)])] * (members - 1)
    if scenario == "turn":  # all move together; the target turns, the others go on straight or stop
        leg1 = int(rng.integers(3, max(3, (3 * n_steps) // 10) + 1))
        leg2 = int(rng.integers(3, max(3, (3 * n_steps) // 10) + 1))
        a = int(rng.integers(0, n_steps - leg1 - leg2 + 1))
        b, c = a + leg1, a + leg1 + leg2
        d2 = str(rng.choice(PERPENDICULAR[d]))
        out = [_steps(n_steps, [(a, b, d), (b, c, d2)])]
        for _ in range(members - 1):
            out.append(_steps(n_steps, [(a, c if rng.random() < 0.5 else b, d)]))
        return out
    if scenario == "size":  # identical motion; only size tells them apart
        return [_free_motion(rng, n_steps)] * members
    raise ValueError(f"unknown look-alike scenario {scenario!r}")


def _free_motion(rng: np.random.Generator, n_steps: int) -> tuple[Step, ...]:
    """Motion of an object outside the look-alike group: mostly a partial motion."""
    low, high = _window_bounds(n_steps)
    kinds = ["still", "move", "start", "stop", "turn", "constant"]
    kind = str(rng.choice(kinds, p=[0.3, 0.25, 0.12, 0.12, 0.11, 0.1]))
    d = str(rng.choice(_DIRS))
    if kind == "turn" and n_steps < 10:
        kind = "move"
    if kind == "still":
        return _steps(n_steps, [])
    if kind == "move":
        length = int(rng.integers(low, high + 1))
        a = int(rng.integers(0, n_steps - length + 1))
        return _steps(n_steps, [(a, a + length, d)])
    if kind == "start":
        return _steps(n_steps, [(int(rng.integers(2, n_steps - low + 1)), n_steps, d)])
    if kind == "stop":
        return _steps(n_steps, [(0, int(rng.integers(low, n_steps - 1)), d)])
    if kind == "turn":
        a = int(rng.integers(0, n_steps - 6 + 1))
        return _steps(n_steps, [(a, a + 3, d), (a + 3, a + 6, str(rng.choice(PERPENDICULAR[d])))])
    return _steps(n_steps, [(0, n_steps, d)])


def _enter_leave_motion(rng: np.random.Generator, n_steps: int, mode: str) -> tuple[Step, ...]:
    """Enter: move in from the border, then stop inside. Leave: wait, then move out."""
    d = str(rng.choice(_DIRS))
    if mode == "enter":
        return _steps(n_steps, [(0, int(rng.integers(n_steps // 2, n_steps - 1)), d)])
    return _steps(n_steps, [(int(rng.integers(2, max(3, n_steps // 2))), n_steps, d)])


def _jitter(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """A shade of a named colour, so colours vary between scenes but names stay true."""
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))


def _plan_objects(rng: np.random.Generator, config: SynthConfig, side: int) -> tuple[list[_Plan], str]:
    n_steps = config.frames - 1
    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    speed_lo, speed_hi = config.speed[0] * side, config.speed[1] * side
    rad_lo, rad_hi = config.radius[0] * side, config.radius[1] * side
    plans: list[_Plan] = []
    scenario = "none"
    taken: tuple[str, str] | None = None
    if n_objects >= 2 and rng.random() < config.p_lookalike:
        members = 3 if n_objects >= 3 and rng.random() < config.p_triple else 2
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        taken = (colour, shape)
        rgb = _jitter(rng, colour)  # look-alikes share the exact colour
        radius = float(rng.uniform(rad_lo, rad_hi))
        speed = float(rng.uniform(speed_lo, speed_hi))
        if rng.random() < config.p_size_variant:
            scenario = "size"
        else:
            options = ["move", "start", "stop"] + (["turn"] if n_steps >= 10 else [])
            scenario = str(rng.choice(options))
        motions = _group_motion(rng, scenario, members, n_steps)
        for i, steps in enumerate(motions):
            r = radius
            if scenario == "size" and i == 0:  # the odd one out is clearly bigger or smaller
                r = radius * 1.5 if radius * 1.5 <= rad_hi * 1.2 else radius / 1.5
            plans.append(_Plan(colour, rgb, shape, r, steps, speed, group=0))
    group_size = len(plans)
    for _ in range(n_objects - group_size):
        while True:
            colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
            if (colour, shape) != taken:
                break
        rgb = _jitter(rng, colour)
        radius = float(rng.uniform(rad_lo, rad_hi))
        speed = float(rng.uniform(speed_lo, speed_hi))
        if rng.random() < config.p_enter_leave:
            mode = "enter" if rng.random() < 0.5 else "leave"
            steps = _enter_leave_motion(rng, n_steps, mode)
            plans.append(_Plan(colour, rgb, shape, radius, steps, speed * 1.3, mode=mode))
        else:
            plans.append(_Plan(colour, rgb, shape, radius, _free_motion(rng, n_steps), speed))
    first_free = max(group_size, 1)  # a look-alike is the preferred victim, else any earlier object
    if len(plans) > first_free and rng.random() < config.p_occluder:
        occluder = plans[first_free]
        occluder.steps, occluder.mode = _steps(n_steps, []), "inside"
        occluder.occludes = plans[int(rng.integers(0, first_free))]
    return plans, scenario


def _candidate_offsets(
    rng: np.random.Generator, path: np.ndarray, reach: float, width: int, height: int, mode: str
) -> np.ndarray:
    """(K, 2) offsets that keep the path in frame ("inside"), or start / end it outside (enter / leave)."""
    lo_in = np.array([reach, reach])
    hi_in = np.array([width - reach, height - reach])
    if mode == "inside":
        low = lo_in - path.min(axis=0)
        high = hi_in - path.max(axis=0)
        if np.any(low > high):
            return np.zeros((0, 2))
        return low + rng.random((_PLACEMENT_TRIES, 2)) * (high - low)
    anchor = path[-1] if mode == "enter" else path[0]  # this end is fully inside
    other = path[0] if mode == "enter" else path[-1]  # this end has its centre outside
    if np.any(hi_in < lo_in):
        return np.zeros((0, 2))
    offsets = lo_in + rng.random((_PLACEMENT_TRIES, 2)) * (hi_in - lo_in) - anchor
    outer = offsets + other
    out = (outer[:, 0] < 0) | (outer[:, 0] >= width) | (outer[:, 1] < 0) | (outer[:, 1] >= height)
    return offsets[out]


def _place(
    rng: np.random.Generator, plan: _Plan, path: np.ndarray, placed: list[tuple[_Plan, np.ndarray]],
    width: int, height: int,
) -> np.ndarray | None:
    """Centres (T, 2) for ``plan`` respecting the other objects, or None when nothing fits."""
    reach = shape_extent(plan.shape, plan.radius)
    offsets = _candidate_offsets(rng, path, reach, width, height, plan.mode)
    if len(offsets) == 0:
        return None
    centres = offsets[:, None, :] + path[None, :, :]  # (K, T, 2)
    ok = np.ones(len(offsets), dtype=bool)
    for other, other_centres in placed:
        gap = np.linalg.norm(centres - other_centres[None], axis=2).min(axis=1)
        both = reach + shape_extent(other.shape, other.radius)
        if plan.occludes is other:
            ok &= (gap >= 0.45 * both) & (gap <= 0.9 * both)
        elif plan.group is not None and plan.group == other.group:
            ok &= gap >= 1.1 * both
        else:
            ok &= gap >= 0.65 * both
    hits = np.flatnonzero(ok)
    return None if len(hits) == 0 else centres[hits[0]]


def _fit_scale(plan: _Plan, path: np.ndarray, side: int) -> float:
    """Factor (<= 1) that shrinks a path spanning more than 80% of the free frame; 1 for enter/leave."""
    span = float((path.max(axis=0) - path.min(axis=0)).max())
    if plan.mode != "inside" or span == 0:
        return 1.0
    return min(1.0, 0.8 * (side - 2 * shape_extent(plan.shape, plan.radius)) / span)


def sample_scene(rng: np.random.Generator, config: SynthConfig) -> Scene | None:
    """Draw one scene; None when the drawn objects cannot be placed (the caller draws again)."""
    height = int(rng.integers(config.min_side, config.max_side + 1))
    width = int(rng.integers(config.min_side, config.max_side + 1))
    side = min(height, width)
    plans, scenario = _plan_objects(rng, config, side)
    paths = [displacements(plan.steps, plan.speed) for plan in plans]
    fits = [_fit_scale(plan, path, side) for plan, path in zip(plans, paths, strict=True)]
    group_fit = min((f for f, p in zip(fits, plans, strict=True) if p.group is not None), default=1.0)
    placed: list[tuple[_Plan, np.ndarray]] = []
    for plan, path, fit in zip(plans, paths, fits, strict=True):
        # slow down until the path fits in the frame; look-alikes alike, so they still move in step
        path = path * (group_fit if plan.group is not None else fit)
        centres = _place(rng, plan, path, placed, width, height)
        if centres is None and plan.occludes is not None:  # no spot across the path: plain clutter then
            plan.occludes = None
            centres = _place(rng, plan, path, placed, width, height)
        if centres is None:
            if plan.group is not None:
                return None
            continue  # drop a clutter object that does not fit
        placed.append((plan, centres))
    if len(placed) < config.min_objects:
        return None
    order = rng.permutation(len(placed))  # the telling look-alike is not always object 0
    depths = rng.uniform(*DEPTH_RANGE, size=len(placed))
    objects = []
    for obj_id, k in enumerate(order):
        plan, centres = placed[int(k)]
        objects.append(
            SceneObject(
                obj_id=obj_id, colour=plan.colour, rgb=plan.rgb, shape=plan.shape, radius=plan.radius,
                depth=round(float(depths[obj_id]), 3), steps=plan.steps, centres=centres, group=plan.group,
            )
        )
    return Scene(height=height, width=width, frames=config.frames, objects=tuple(objects), scenario=scenario)
