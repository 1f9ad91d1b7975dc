"""Score a folder of predicted masks against a referring-video dataset, the way MeViS does.

Predictions live at ``<pred_dir>/<video>/<exp_id>/<frame>.png``, one mask per frame at frame size.
Grayscale masks are foreground where the value is > 127 (so 0/255 masks, the usual output, and
0/1-thresholded-then-scaled masks read the same); bilevel ("1") PNGs are read as is and palette PNGs
as object indices, foreground where nonzero. Per expression, J and F are averaged over all its
frames; the dataset scores are the means over expressions and J&F = (J + F) / 2.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from glus_ros.datasets.mevis import Expression, open_image
from glus_ros.metrics import DEFAULT_BOUND_TH, video_j_f

# grayscale prediction values above this are foreground
PRED_THRESHOLD = 127
# how many missing prediction files an error message names
_NAMED_MISSING = 3

CSV_COLUMNS = ("video", "exp_id", "expression", "J", "F", "J&F", "frames")


class ReferringDataset(Protocol):
    """What scoring needs from a dataset reader (``MevisDataset``, ``RefYoutubeVosDataset``)."""

    split: str

    def expressions(self) -> list[Expression]: ...

    def frames(self, video: str) -> list[str]: ...

    def gt_masks(self, expression: Expression) -> np.ndarray: ...


@dataclass(frozen=True)
class ExpressionScore:
    """Scores of one expression, averaged over its frames."""

    video: str
    exp_id: str
    expression: str
    j: float
    f: float
    frames: int

    @property
    def j_and_f(self) -> float:
        return (self.j + self.f) / 2


@dataclass(frozen=True)
class EvalResult:
    """Per-expression scores and their MeViS-style aggregate (mean over expressions)."""

    rows: tuple[ExpressionScore, ...]
    missing: int = 0  # prediction files scored as empty masks (allow_missing=True)

    @property
    def j(self) -> float:
        return float(np.mean([r.j for r in self.rows]))

    @property
    def f(self) -> float:
        return float(np.mean([r.f for r in self.rows]))

    @property
    def j_and_f(self) -> float:
        return (self.j + self.f) / 2

    @property
    def num_expressions(self) -> int:
        return len(self.rows)


def prediction_path(pred_dir: Path, expression: Expression, frame: str) -> Path:
    return pred_dir / expression.video / expression.exp_id / f"{frame}.png"


def read_prediction(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read one predicted mask as HxW bool; a size other than the frame's is an error naming both."""
    with open_image(path) as image:
        if (image.height, image.width) != tuple(shape):
            raise ValueError(
                f"prediction {path} is {image.height}x{image.width} (HxW), the frame is {shape[0]}x{shape[1]}"
            )
        try:
            if image.mode == "1":
                return np.asarray(image, dtype=bool)
            if image.mode == "P":
                return np.asarray(image) > 0
            gray = image if image.mode == "L" else image.convert("L")
            return np.asarray(gray) > PRED_THRESHOLD
        except OSError as exc:  # truncated files fail only when the pixels are decoded
            raise ValueError(f"unreadable prediction {path}: {exc}") from exc


def _missing_predictions(
    pred_dir: Path, dataset: ReferringDataset, expressions: Sequence[Expression]
) -> list[Path]:
    return [
        path
        for e in expressions
        for frame in dataset.frames(e.video)
        if not (path := prediction_path(pred_dir, e, frame)).is_file()
    ]


def evaluate_predictions(
    pred_dir: str | Path,
    dataset: ReferringDataset,
    allow_missing: bool = False,
    progress: bool = False,
    bound_th: float = DEFAULT_BOUND_TH,
    from_frame: int = 0,
) -> EvalResult:
    """J, F and J&F of every expression of ``dataset`` from the PNG masks under ``pred_dir``.

    Missing files are an error (how many, and the first few) unless ``allow_missing``, which scores
    them as empty masks and counts them in ``EvalResult.missing``. ``from_frame`` > 0 scores each video
    from that frame on (a live replay cannot have a mask on the frame its command arrives with: comparing
    live and offline on the frames after it separates that from the tracking quality).
    """
    if from_frame < 0:
        raise ValueError(f"from_frame must be >= 0, got {from_frame}")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    expressions = dataset.expressions()
    if not expressions:
        raise ValueError(f"dataset split {dataset.split!r} has no expressions to evaluate")

    missing = _missing_predictions(pred_dir, dataset, expressions)
    if missing and not allow_missing:
        total = sum(len(dataset.frames(e.video)) for e in expressions)
        named = ", ".join(str(p) for p in missing[:_NAMED_MISSING])
        more = f" and {len(missing) - _NAMED_MISSING} more" if len(missing) > _NAMED_MISSING else ""
        raise FileNotFoundError(
            f"{len(missing)} of {total} prediction PNGs are missing under {pred_dir}: {named}{more} "
            "(allow_missing scores them as empty masks)"
        )
    missing_set = set(missing)

    rows = []
    for e in tqdm(expressions, desc="eval", unit="expr", disable=not progress):
        gts = dataset.gt_masks(e)
        frames = dataset.frames(e.video)
        shape = (gts.shape[1], gts.shape[2])
        preds = np.zeros_like(gts)
        for t, frame in enumerate(frames):
            path = prediction_path(pred_dir, e, frame)
            if path not in missing_set:
                preds[t] = read_prediction(path, shape)
        if from_frame >= len(frames):
            raise ValueError(f"from_frame {from_frame}: video {e.video} has only {len(frames)} frames")
        j, f = video_j_f(preds[from_frame:], gts[from_frame:], bound_th)
        rows.append(ExpressionScore(e.video, e.exp_id, e.text, j, f, len(frames) - from_frame))
    return EvalResult(rows=tuple(rows), missing=len(missing))


def write_csv(result: EvalResult, path: str | Path) -> Path:
    """Write one row per expression (video, exp_id, expression, J, F, J&F, frames); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in result.rows:
            writer.writerow(
                [r.video, r.exp_id, r.expression, f"{r.j:.6f}", f"{r.f:.6f}", f"{r.j_and_f:.6f}", r.frames]
            )
    return path
