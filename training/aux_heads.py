"""Auxiliary supervision of the [SEG] state, for training a tiny model from scratch.

A randomly initialised tiny LLM learns to segment *objects* quickly but not *which* object: the
expression does not reach the [SEG] state through the mask loss alone within a CPU budget (measured;
see docs/training.md). Small heads on each [SEG] hidden state give the state a direct target:

- point: the target's centre in its query frame (normalised x, y) and whether it is visible, derived
  from the ground-truth masks, so it works for every dataset;
- attributes: the colour and shape of the referred object(s), known for free on synthetic data;
- cells: the colour and shape of the object in each visual-token cell of every frame (synthetic data),
  on the tokens the LLM reads. Measured: without it the tiny vision tower's tokens tell colours apart
  but not shapes (linear probe 0.26-0.35 against a 0.43 majority class), so no [SEG] can pick "the
  triangle" among circles however well the LLM reads the expression.

The heads are training-only (not saved with the model); their weights are configured in the recipe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glus_ros.data.scene import COLOURS
from glus_ros.data.shapes import SHAPES
from glus_ros.datasets.base import Expression

IGNORE = -100
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)


class AuxHeads(nn.Module):
    def __init__(self, hidden: int, cells: bool = False, offset_bins: int = 0) -> None:
        super().__init__()
        if offset_bins < 0 or (offset_bins and not cells):
            raise ValueError(f"offset_bins must be >= 0 and needs the cell head, got {offset_bins} (cells={cells})")
        self.point = nn.Linear(hidden, 3)                 # x, y (normalised, sigmoid), visibility logit
        self.colour = nn.Linear(hidden, len(COLOUR_NAMES))
        self.shape = nn.Linear(hidden, len(SHAPES))
        self.offset_bins = offset_bins
        # per visual token: colour and shape classes plus "no object" for each, then (if offset_bins) the
        # x and y bin of the object's centre inside the cell
        width = len(COLOUR_NAMES) + 1 + len(SHAPES) + 1 + 2 * offset_bins
        self.cells = nn.Linear(hidden, width) if cells else None

    def cell_parts(self, logits: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Split flat cell logits (N, width) into (logits, label column) pairs: colour, shape[, x bin, y bin]."""
        split = len(COLOUR_NAMES) + 1
        shapes = split + len(SHAPES) + 1
        parts = [(logits[:, :split], 0), (logits[:, split:shapes], 1)]
        if self.offset_bins:
            bins = self.offset_bins
            parts += [(logits[:, shapes:shapes + bins], 2), (logits[:, shapes + bins:shapes + 2 * bins], 3)]
        return parts

    def cell_losses(self, frame_tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """frame_tokens (B, F, T, D) LLM inputs, labels (B, F, G, G, C) with G*G = T -> colour + shape CE, plus
        the centre's x / y bin CE when the head has ``offset_bins`` (labels then have C = 4 columns)."""
        if self.cells is None:
            raise ValueError("these auxiliary heads have no cell head (AuxHeads(hidden, cells=True))")
        need = 4 if self.offset_bins else 2
        if labels.shape[-1] < need:
            raise ValueError(f"cell labels have {labels.shape[-1]} columns; this head needs {need} "
                             "(SynthCellLabels(..., offset_bins) for the offset bins)")
        logits = self.cells(frame_tokens.float()).flatten(0, 2)
        target = labels.to(logits.device).flatten(0, 3)
        out = logits.sum() * 0.0
        for part, column in self.cell_parts(logits):
            if (target[:, column] != IGNORE).any():
                out = out + F.cross_entropy(part, target[:, column], ignore_index=IGNORE)
        return out

    def forward(self, seg_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """seg_hidden (B, Nq, D) -> point (B, Nq, 3), colour (B, C), shape (B, S) from the mean [SEG]."""
        pooled = seg_hidden.mean(dim=1)
        return {"point": self.point(seg_hidden), "colour": self.colour(pooled), "shape": self.shape(pooled)}


def mask_centres(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H, W) {0,1} -> normalised centres (..., 2) as (x, y) in [0, 1] and visibility (...) in {0, 1}."""
    h, w = masks.shape[-2:]
    ys = (torch.arange(h, dtype=torch.float32, device=masks.device) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32, device=masks.device) + 0.5) / w
    area = masks.float().sum(dim=(-2, -1))
    safe = area.clamp(min=1.0)
    cx = (masks.float().sum(dim=-2) * xs).sum(dim=-1) / safe
    cy = (masks.float().sum(dim=-1) * ys).sum(dim=-1) / safe
    return torch.stack([cx, cy], dim=-1), (area > 0).float()


def aux_losses(out: dict[str, torch.Tensor], masks: torch.Tensor, attributes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Point L1 (visible frames) + visibility BCE; colour and shape CE where the label is known.

    masks (B, Nq, H, W); attributes (B, 2) colour and shape indices, ``IGNORE`` where not defined.
    """
    centres, visible = mask_centres(masks)
    pred = out["point"].float()
    l1 = (torch.sigmoid(pred[..., :2]) - centres).abs().sum(dim=-1)
    point = (l1 * visible).sum() / visible.sum().clamp(min=1.0)
    point = point + F.binary_cross_entropy_with_logits(pred[..., 2], visible)
    attrs = attributes.to(pred.device)
    zero = pred.sum() * 0.0
    colour = F.cross_entropy(out["colour"].float(), attrs[:, 0], ignore_index=IGNORE) if (attrs[:, 0] != IGNORE).any() \
        else zero
    shape = F.cross_entropy(out["shape"].float(), attrs[:, 1], ignore_index=IGNORE) if (attrs[:, 1] != IGNORE).any() \
        else zero
    return {"aux_point": point, "aux_attributes": colour + shape}


def synth_meta_videos(split_dir: Path, purpose: str) -> dict:
    """The ``videos`` mapping of a synthetic split's ``synth_meta.json``; a missing file names what needed it."""
    meta_path = Path(split_dir) / "synth_meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {purpose} needs a synthetic split")
    return json.loads(meta_path.read_text())["videos"]


def synth_attribute_labels(split_dir: Path, expressions: Sequence[Expression]) -> list[tuple[int, int]]:
    """(colour, shape) index per expression from ``synth_meta.json``; ``IGNORE`` where the objects differ."""
    videos = synth_meta_videos(split_dir, "attribute supervision")
    labels = []
    for e in expressions:
        objects = videos[e.video]["objects"]
        colours = {objects[str(o)]["colour"] for o in e.obj_ids}
        shapes = {objects[str(o)]["shape"] for o in e.obj_ids}
        colour = COLOUR_NAMES.index(colours.pop()) if len(colours) == 1 else IGNORE
        shape = SHAPES.index(shapes.pop()) if len(shapes) == 1 else IGNORE
        labels.append((colour, shape))
    return labels


def centre_cell(cx: float, cy: float, grid: int) -> tuple[int, int]:
    """(row, column) of the ``grid`` x ``grid`` token cell that holds the normalised centre (cx, cy)."""
    return min(grid - 1, int(cy * grid)), min(grid - 1, int(cx * grid))


def disc_cells(obj: dict, t: int, width: int, height: int, grid: int) -> tuple[int, int, int, int]:
    """Inclusive (row0, row1, col0, col1) of the token cells an object's disc reaches in frame ``t``
    (``synth_meta.json`` object entry: normalised centroid, radius in pixels)."""
    cx, cy = obj["centroid"][t]
    rx, ry = obj["radius_px"] / width, obj["radius_px"] / height
    x0, x1 = int(max(0.0, cx - rx) * grid), int(min(0.999, cx + rx) * grid)
    y0, y1 = int(max(0.0, cy - ry) * grid), int(min(0.999, cy + ry) * grid)
    return y0, y1, x0, x1


class SynthCellLabels:
    """Per-cell colour / shape classes of a synthetic split's frames, from ``synth_meta.json`` (centroids, sizes).

    A cell holding exactly one visible object's centre gets its classes; cells the object's disc reaches
    without holding its centre, or holding several centres, are ignored; the rest are "no object"
    (class index len(COLOUR_NAMES) / len(SHAPES)). Cells follow the token grid: row = y, row-major.

    ``offset_bins`` > 0 adds two columns: where in the cell that centre lies (x bin, y bin of
    ``offset_bins`` equal bins; ``IGNORE`` in every other cell). Why: objects move about a third of a
    4x4 cell over a clip, so motion and "the leftmost of two look-alikes" live below the token grid.
    """

    def __init__(self, split_dir: Path, grid: int, offset_bins: int = 0) -> None:
        self.videos = synth_meta_videos(split_dir, "cell supervision")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        if offset_bins < 0:
            raise ValueError(f"offset_bins must be >= 0, got {offset_bins}")
        self.grid = grid
        self.offset_bins = offset_bins

    def __call__(self, video: str, frames: list[int]) -> np.ndarray:
        g = self.grid
        meta = self.videos[video]
        height, width = meta["size"]
        bins = self.offset_bins
        out = np.full((len(frames), g, g, 4 if bins else 2), IGNORE, dtype=np.int64)
        for i, t in enumerate(frames):
            free = np.ones((g, g), dtype=bool)
            centres: dict[tuple[int, int], list[tuple[int, ...]]] = {}
            for obj in meta["objects"].values():
                if obj["visibility"][t] < 0.5:
                    continue
                cx, cy = obj["centroid"][t]
                y0, y1, x0, x1 = disc_cells(obj, t, width, height, g)
                free[y0:y1 + 1, x0:x1 + 1] = False
                cell = centre_cell(cx, cy, g)
                classes: tuple[int, ...] = (COLOUR_NAMES.index(obj["colour"]), SHAPES.index(obj["shape"]))
                if bins:
                    fx, fy = cx * g - cell[1], cy * g - cell[0]   # where in its cell, in [0, 1)
                    classes += (min(bins - 1, max(0, int(fx * bins))), min(bins - 1, max(0, int(fy * bins))))
                centres.setdefault(cell, []).append(classes)
            out[i][free, :2] = (len(COLOUR_NAMES), len(SHAPES))
            for (row, col), classes in centres.items():
                if len(classes) == 1:
                    out[i, row, col] = classes[0]
        return out


class SynthReferenceCells:
    """The token cells of a relation expression's reference object ("near *the red circle*") per frame,
    from ``synth_meta.json`` (the expression's ``ref:<obj_id>`` tag, the object's centroid and radius).

    (frames, G, G) {0, 1}: the cells the reference's disc reaches where it is visible; all zero for
    expressions without a reference (and counting questions), which the anchor loss then skips. Why:
    the grounding map's near / far anchors must find the reference object, and the map's own loss did
    not teach them to (relation frames ranked at chance; docs/training.md).
    """

    def __init__(self, split_dir: Path, grid: int) -> None:
        self.videos = synth_meta_videos(split_dir, "reference-object supervision")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.grid = grid

    def reference(self, expression: Expression) -> int | None:
        """The object id an expression's relation refers to, or None."""
        entry = self.videos[expression.video]["expressions"].get(expression.exp_id)
        if entry is None:  # counting questions (exp_id q<i>) and other given expressions
            return None
        refs = [int(tag.split(":", 1)[1]) for tag in entry["tags"] if tag.startswith("ref:")]
        return refs[0] if refs else None

    def __call__(self, expression: Expression, frames: list[int]) -> np.ndarray:
        g = self.grid
        out = np.zeros((len(frames), g, g), dtype=np.float32)
        ref = self.reference(expression)
        if ref is None:
            return out
        meta = self.videos[expression.video]
        height, width = meta["size"]
        obj = meta["objects"][str(ref)]
        for i, t in enumerate(frames):
            if obj["visibility"][t] >= 0.5:
                y0, y1, x0, x1 = disc_cells(obj, t, width, height, g)
                out[i, y0:y1 + 1, x0:x1 + 1] = 1.0
        return out


class SynthMotionCells:
    """How the object in each token cell moves between consecutive context frames, from ``synth_meta.json``:
    the training target of the grounding map's motion field (``aux.motion``; glus_ros/model/motion_field.py).

    Returns (G, G, 2 * (F - 1) + 1) for F context frames: per cell the object's (dx, dy) from each context
    frame to the next, in quarter token cells (a clip's motion is about 1.5 of them), and a last column
    weighting the cell: 1 for the cell holding the mean centre of an object visible in every context frame,
    ``background`` for cells no object reaches (target 0: nothing moves there), 0 (ignored) for the rest:
    cells several centres share, cells a disc reaches without its centre, objects hidden in some frame.
    """

    def __init__(self, split_dir: Path, grid: int, background: float = 0.2) -> None:
        self.videos = synth_meta_videos(split_dir, "motion supervision")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.grid = grid
        self.background = background

    def __call__(self, video: str, frames: list[int]) -> np.ndarray:
        g, steps = self.grid, len(frames) - 1
        if steps < 1:
            raise ValueError(f"motion targets need at least 2 context frames, got {len(frames)}")
        meta = self.videos[video]
        height, width = meta["size"]
        out = np.zeros((g, g, 2 * steps + 1), dtype=np.float32)
        weight = np.full((g, g), self.background, dtype=np.float32)
        centres: dict[tuple[int, int], list[np.ndarray]] = {}
        for obj in meta["objects"].values():
            seen = [t for t in frames if obj["visibility"][t] >= 0.5]
            for t in seen:
                y0, y1, x0, x1 = disc_cells(obj, t, width, height, g)
                weight[y0:y1 + 1, x0:x1 + 1] = 0.0
            if len(seen) < len(frames):
                continue
            path = np.array([obj["centroid"][t] for t in frames], dtype=np.float32)   # (F, 2) normalised x, y
            mean = path.mean(axis=0)
            centres.setdefault(centre_cell(float(mean[0]), float(mean[1]), g), []).append(
                (np.diff(path, axis=0) * g * 4).reshape(-1))
        for (row, col), moves in centres.items():
            if len(moves) == 1:
                out[row, col, :-1] = moves[0]
                weight[row, col] = 1.0
        out[..., -1] = weight
        return out


def motion_cell_loss(field: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """field (B, G*G, dim) motion vectors, targets (B, G, G, 2 * steps + 1) (:class:`SynthMotionCells`) ->
    the weighted smooth-L1 of the field's first 2 * steps channels against the moves."""
    moves = targets.to(field.device).flatten(1, 2)                     # (B, T, 2 * steps + 1)
    width = moves.shape[-1] - 1
    if field.shape[-1] < width:
        raise ValueError(f"motion field has {field.shape[-1]} channels, the targets need {width}")
    weight = moves[..., -1]
    error = F.smooth_l1_loss(field[..., :width].float(), moves[..., :-1], reduction="none").sum(dim=-1)
    return (error * weight).sum() / weight.sum().clamp(min=1e-6)
