"""A whole video from a pointing backend: its points, and the masks SAM 2 propagates from them both ways.

The model is shown frames sampled from the clip (the backend's own rule, e.g. Molmo2's
``uniform_last_frame`` at most 2 frames per second) and points at some of them; the frames it pointed at
are the anchors of ``PointPropagator`` (VideoMolmo's post-processing: point prompts on the anchors,
forward and backward memory passes between them, fused by inverse temporal distance). ``anchors``:

- ``"key"``: the one frame with the most points (the earliest of equals);
- ``"all"``: every frame the model pointed at;
- an int ``k``: the pointed frames, thinned from the first so that anchors are at least ``k`` frames apart.

The interface is ``PointPredictor``'s (``segment(frames, expression, anchors) -> (PointSegmentation,
FramePoints)``), so ``segment --points`` and ``evaluate_points`` take either. A video the model points
nowhere in (or whose answer is malformed) gets empty masks: the target is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glus_ros.backends.base import GroundingBackend, TargetGrounding
from glus_ros.points.coords import Point
from glus_ros.points.predictor import FramePoints
from glus_ros.points.propagation import PointPropagator, PointSegmentation, normalised_anchors

DEFAULT_FPS = 10.0   # frame folders carry no rate; read_video assumes this one too


def choose_anchors(points: Sequence[Sequence[Point]], anchors: str | int) -> list[int]:
    """Anchor frames among the frames with points (module doc)."""
    pointed = [t for t, p in enumerate(points) if p]
    if anchors == "all":
        return pointed
    if anchors == "key":
        return [max(pointed, key=lambda t: (len(points[t]), -t))] if pointed else []
    if isinstance(anchors, (int, np.integer)) and not isinstance(anchors, bool) and anchors >= 1:
        chosen: list[int] = []
        for t in pointed:
            if not chosen or t - chosen[-1] >= anchors:
                chosen.append(t)
        return chosen
    raise ValueError(f"anchors must be 'key', 'all' or a frame spacing >= 1, got {anchors!r}")


class BackendPointPredictor:
    """Points and point-prompted masks of a whole video from a ``answers == "points"`` backend."""

    def __init__(self, backend: GroundingBackend, dtype: str = "fp32", fps: float = DEFAULT_FPS) -> None:
        if backend.answers != "points":
            raise ValueError(f"the {backend.name} backend answers with {backend.answers}, not points")
        self.backend = backend
        self.dtype = dtype
        self.fps = fps
        self.last_grounding: TargetGrounding | None = None

    def frame_points(self, frames: Sequence[np.ndarray], expression: str) -> FramePoints:
        """Normalised points of every frame (empty on frames the model did not point at)."""
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        shown = self.backend.sample_video(len(frames), self.fps)
        grounding = self.backend.ground([frames[t] for t in shown], [expression],
                                        timestamps=[t / self.fps for t in shown])[0]
        self.last_grounding = grounding
        points: list[list[Point]] = [[] for _ in frames]
        confidence = np.zeros(len(frames), dtype=np.float32)
        for slot, found in grounding.points_by_frame().items():
            points[shown[slot]] = found
            confidence[shown[slot]] = 1.0 if found else 0.0
        return FramePoints(points, confidence)

    def segment(self, frames: Sequence[np.ndarray], expression: str, anchors: str | int = "key",
                ) -> tuple[PointSegmentation, FramePoints]:
        predicted = self.frame_points(frames, expression)
        chosen = choose_anchors(predicted.points, anchors)
        height, width = frames[0].shape[:2]
        if not chosen:  # pointed nowhere: lost on every frame
            empty = np.zeros((len(frames), height, width), dtype=bool)
            return PointSegmentation(empty, np.zeros(len(frames), dtype=np.float32),
                                     [() for _ in frames], []), predicted
        pixel_anchors = normalised_anchors({t: predicted.points[t] for t in chosen}, height, width)
        propagator = PointPropagator(self.backend.tracker, self.dtype)  # type: ignore[arg-type]
        return propagator.segment(frames, pixel_anchors), predicted
