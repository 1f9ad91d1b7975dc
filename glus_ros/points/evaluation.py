"""Pointing scores of a model on a referring-video dataset: point accuracy, counting, point-prompted J&F.

Per expression the model points on every frame (``PointPredictor``); the ground truth of a frame is
one mask per referred object. The readers give the union mask of an expression, so objects are
separated by asking the reader for one annotation at a time (MeViS: ``anno_ids``; Ref-YouTube-VOS:
``obj_ids``); ``split="components"`` instead cuts the union mask into connected components, for a
reader that only has union masks (an approximation: touching objects merge, occluded ones split).

- point accuracy: ``glus_ros.points.matching`` per frame, averaged over all frames (of all
  expressions) that have points or visible objects;
- counting accuracy: exact count (number of points vs visible objects) over all frames, and over the
  frames of "how many ..." expressions alone (None when the dataset has none);
- J, F, J&F: of the masks propagated from the points (``PointPredictor.segment``), mean over expressions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from glus_ros.datasets.base import Expression
from glus_ros.evaluation import ExpressionScore
from glus_ros.geometry import MIN_COMPONENT_FRACTION
from glus_ros.metrics import video_j_f
from glus_ros.model.task_adapter import COUNTING, task_of
from glus_ros.points.labels import components_as_objects
from glus_ros.points.matching import count_accuracy, frame_point_accuracy
from glus_ros.points.predictor import PointPredictor

if TYPE_CHECKING:
    from glus_ros.model.glus import GLUSModel

class PointDataset(Protocol):
    def expressions(self) -> list[Expression]: ...
    def frames(self, video: str) -> list[str]: ...
    def load_frame(self, video: str, frame: str) -> np.ndarray: ...
    def gt_masks(self, expression: Expression) -> np.ndarray: ...


def is_counting_expression(text: str) -> bool:
    """A counting question ("how many ...?"): the same rule that routes it to a counting adapter."""
    return task_of(text) == COUNTING


def object_masks(reader: PointDataset, expression: Expression,
                 split: Literal["ids", "components"] = "ids") -> np.ndarray:
    """(N, T, H, W) bool: one mask track per referred object (see module doc for how they are separated)."""
    if split == "components":
        return components_as_objects(reader.gt_masks(expression))
    if split != "ids":
        raise ValueError(f"split must be 'ids' or 'components', got {split!r}")
    field = "anno_ids" if expression.anno_ids is not None else "obj_ids"
    ids = getattr(expression, field)
    if len(ids) <= 1:
        return reader.gt_masks(expression)[None]
    return np.stack([reader.gt_masks(dataclasses.replace(expression, **{field: (i,)})) for i in ids])


@dataclass(frozen=True)
class ExpressionPoints(ExpressionScore):
    """An expression's J / F of its point-prompted masks, plus its pointing scores."""

    point_accuracy: float = math.nan   # mean over the expression's scored frames (NaN: none scored)
    count_accuracy: float = math.nan   # over all its frames


@dataclass(frozen=True)
class PointsEvaluation:
    expressions: list[ExpressionPoints]
    point_accuracy: float               # over all scored frames (NaN: no frame scored)
    count_accuracy: float               # over all frames
    counting_accuracy: float | None     # over the frames of "how many" expressions; None without any
    j: float
    f: float

    @property
    def j_and_f(self) -> float:
        return (self.j + self.f) / 2


class SegmentsWithPoints(Protocol):
    """``PointPredictor`` or ``glus_ros.backends.video.BackendPointPredictor`` (any backend's points)."""

    def segment(self, frames: Sequence[np.ndarray], expression: str, anchors: str | int = "key"): ...


def evaluate_points(model: GLUSModel | None, reader: PointDataset, anchors: str | int = "key",
                    expressions: Sequence[Expression] | None = None, split: Literal["ids", "components"] = "ids",
                    dtype: str = "fp32", progress: bool = False, source: str = "auto",
                    min_fraction: float = MIN_COMPONENT_FRACTION,
                    predictor: SegmentsWithPoints | None = None) -> PointsEvaluation:
    """Score ``model``'s pointing on ``reader`` (all its expressions unless ``expressions`` is given).

    ``source``: where the points come from (``PointPredictor``: the point head, the [SEG] masks, or auto);
    ``min_fraction``: the mask source's smallest component kept, as a fraction of the largest.
    ``predictor``: score another backend's points instead (e.g. ``BackendPointPredictor`` over Molmo2);
    then ``model``, ``dtype``, ``source`` and ``min_fraction`` are not read.
    """
    from tqdm import tqdm

    if predictor is None:
        if model is None:
            raise ValueError("evaluate_points needs a model or a predictor")
        predictor = PointPredictor(model, dtype, source, min_fraction=min_fraction)
    todo = list(reader.expressions() if expressions is None else expressions)
    if not todo:
        raise ValueError("no expressions to evaluate")
    rows: list[ExpressionPoints] = []
    frame_scores: list[float] = []
    counts: list[tuple[int, int]] = []
    counting: list[tuple[int, int]] = []
    video, frames = None, []
    for expr in tqdm(todo, desc="points", unit="expr", disable=not progress):
        if expr.video != video:
            video, frames = expr.video, [reader.load_frame(expr.video, f) for f in reader.frames(expr.video)]
        objects = object_masks(reader, expr, split)
        if objects.shape[1] != len(frames):
            raise ValueError(f"ground truth of {expr.video}/{expr.exp_id} has {objects.shape[1]} frames, "
                             f"the video has {len(frames)}")
        segmentation, predicted = predictor.segment(frames, expr.text, anchors)
        scored = [frame_point_accuracy(predicted.points[t], objects[:, t]) for t in range(len(frames))]
        scored_only = [s for s in scored if s is not None]
        truth = [int(objects[:, t].reshape(objects.shape[0], -1).any(axis=1).sum()) for t in range(len(frames))]
        pairs = list(zip(predicted.counts, truth, strict=True))
        j, f = video_j_f(segmentation.masks, objects.any(axis=0))
        rows.append(ExpressionPoints(expr.video, expr.exp_id, expr.text, j, f, len(frames),
                                     point_accuracy=float(np.mean(scored_only)) if scored_only else math.nan,
                                     count_accuracy=count_accuracy(*zip(*pairs, strict=True))))
        frame_scores += scored_only
        counts += pairs
        if is_counting_expression(expr.text):
            counting += pairs
    return PointsEvaluation(
        expressions=rows,
        point_accuracy=float(np.mean(frame_scores)) if frame_scores else math.nan,
        count_accuracy=count_accuracy(*zip(*counts, strict=True)),
        counting_accuracy=count_accuracy(*zip(*counting, strict=True)) if counting else None,
        j=float(np.mean([r.j for r in rows])),
        f=float(np.mean([r.f for r in rows])),
    )
