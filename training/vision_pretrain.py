"""Vision pre-training: the vision tower learns what is in each token's cell before the LLM reads it.

Why (measured, docs/training.md): trained end to end from scratch, the tiny vision tower's tokens tell
colours apart but not shapes, so no [SEG] can pick "the triangle" among circles. Per-cell shape is a
slow signal (a cell cuts objects at arbitrary offsets): trained on the cell task alone the tower
memorises 500 videos (0.94 on training frames, 0.50 on unseen ones) but generalises from 2,000
(0.85-0.89 after 5,000 steps of 32 frames). This stage trains only the vision tower, the projector and
a per-cell colour/shape head (``AuxHeads.cells``, dropped afterwards) on single frames of a synthetic
split, before the main stage; it is cheap (no LLM, no SAM 2: ~0.1 s per step on 2 CPU cores). The
per-cell position code (``vlm.visual_position``) is left out: the stage and its cache are the same with
or without that option.

Every ``eval_every`` steps it reports colour and shape accuracy on the object cells of frames from
videos it does not train on (the split's last ``held_out`` videos), so a run shows whether the tower
generalises or memorises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from glus_ros.model.glus import GLUSModel
from glus_ros.model.transforms import clip_input, to_tensor
from glus_ros.training.aux_heads import COLOUR_NAMES, IGNORE, AuxHeads, SynthCellLabels
from glus_ros.training.config import VisionPretrainSpec

log = logging.getLogger(__name__)


def stage_parameters(model: GLUSModel) -> dict[str, torch.nn.Parameter]:
    """What this stage trains and saves: the vision tower and the projector, as ``vision_tower.*`` / ``projector.*``."""
    vlm = model.vlm
    return {**dict(vlm.vision_tower.named_parameters(prefix="vision_tower")),
            **dict(vlm.projector.named_parameters(prefix="projector"))}


def vision_state(model: GLUSModel) -> dict[str, torch.Tensor]:
    """The weights this stage trains, detached on the CPU (what the trainer caches between runs)."""
    return {n: p.detach().cpu().clone() for n, p in stage_parameters(model).items()}


def load_vision_state(model: GLUSModel, state: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`vision_state` into a model of the same architecture; a mismatch is an error naming it."""
    params = stage_parameters(model)
    missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or extra:
        raise ValueError(f"vision weights do not match this model: missing {missing[:4]}, unexpected {extra[:4]}")
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise ValueError(f"vision weight {name}: shape {tuple(value.shape)} does not fit the model's "
                                 f"{tuple(params[name].shape)} (another image_size / patch_size?)")
            params[name].copy_(value)


class CellFrames:
    """Single frames of a synthetic split with their per-cell labels, drawn from a fixed set of videos."""

    def __init__(self, reader: Any, labels: SynthCellLabels, videos: list[str], image_size: int,
                 on_error: str = "skip") -> None:
        if not videos:
            raise ValueError("no videos to draw frames from")
        self.reader, self.labels, self.videos = reader, labels, videos
        self.image_size = image_size
        self.on_error = on_error
        self.skipped = 0

    def _one(self, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        for _ in range(100):
            video = self.videos[int(rng.integers(len(self.videos)))]
            names = self.reader.frames(video)
            t = int(rng.integers(len(names)))
            try:
                frame = self.reader.load_frame(video, names[t])
                labels = self.labels(video, [t])[0]
            except (OSError, ValueError, KeyError, IndexError) as err:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                log.warning("vision pre-training: skipped frame %d of %s (%s)", t, video, err)
                continue
            return clip_input(to_tensor([frame]), self.image_size)[0], labels
        raise RuntimeError("vision pre-training: 100 frames in a row could not be read; is the split corrupt?")

    def batch(self, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(size, 3, S, S) CLIP-normalised frames and (size, G, G, C) per-cell labels (SynthCellLabels)."""
        pairs = [self._one(rng) for _ in range(size)]
        return torch.stack([p for p, _ in pairs]), torch.from_numpy(np.stack([y for _, y in pairs])).long()


def cell_scores(heads: AuxHeads, tokens: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per-column accuracy on the cells that hold an object: colour, shape and, with offset bins, the share
    of centres placed within one bin of the truth on both axes (``offset``)."""
    assert heads.cells is not None
    logits = heads.cells(tokens.float()).flatten(0, 1)
    target = labels.to(logits.device).flatten(0, 2)
    object_cells = (target[:, 0] != IGNORE) & (target[:, 0] < len(COLOUR_NAMES))
    if not bool(object_cells.any()):
        return {"colour": float("nan"), "shape": float("nan")} | ({"offset": float("nan")} if heads.offset_bins else {})
    picked = {column: part.argmax(-1)[object_cells] for part, column in heads.cell_parts(logits)}
    truth = target[object_cells]
    scores = {"colour": float((picked[0] == truth[:, 0]).float().mean()),
              "shape": float((picked[1] == truth[:, 1]).float().mean())}
    if heads.offset_bins:
        near = ((picked[2] - truth[:, 2]).abs() <= 1) & ((picked[3] - truth[:, 3]).abs() <= 1)
        scores["offset"] = float(near.float().mean())
    return scores


def pretrain_vision(model: GLUSModel, reader: Any, labels: SynthCellLabels, spec: VisionPretrainSpec, seed: int = 0,
                    on_error: str = "skip", progress: bool = True,
                    on_row: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``model.vlm``'s vision tower + projector on the per-cell task; returns one row per evaluation.

    Other weights are untouched and every parameter's ``requires_grad`` is restored afterwards.
    """
    from tqdm import tqdm

    spec.check("vision_pretrain")
    videos = list(reader.videos())
    if spec.held_out >= len(videos):
        raise ValueError(f"vision_pretrain: held_out {spec.held_out} leaves no training videos "
                         f"(the split has {len(videos)})")
    vlm = model.vlm
    device = next(vlm.parameters()).device
    size = model.cfg.vlm.image_size
    train = CellFrames(reader, labels, videos[: -spec.held_out], size, on_error)
    held = CellFrames(reader, labels, videos[-spec.held_out:], size, on_error)
    held_px, held_y = held.batch(spec.eval_frames, np.random.default_rng(seed + 1))
    with torch.random.fork_rng(devices=[]):  # the head's initialisation leaves the caller's RNG as it was
        torch.manual_seed(seed)
        heads = AuxHeads(vlm.hidden_size, cells=True, offset_bins=spec.offset_bins).to(device)
    before = {n: p.requires_grad for n, p in vlm.named_parameters()}
    params = list(stage_parameters(model).values())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam([*params, *heads.parameters()], lr=spec.lr)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float]] = []
    losses: list[float] = []
    was_training = vlm.training
    vlm.train()
    bar = tqdm(total=spec.steps, desc="vision pre-training", unit="step", disable=not progress)
    try:
        for step in range(1, spec.steps + 1):
            px, y = train.batch(spec.batch_size, rng)
            loss = heads.cell_losses(vlm.encode_frames(px.to(device), position=False)[:, None], y[:, None])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % spec.eval_every == 0 or step == spec.steps:
                vlm.eval()
                with torch.no_grad():
                    scores = cell_scores(heads, vlm.encode_frames(held_px.to(device), position=False), held_y)
                vlm.train()
                row = {"step": step, "loss": float(np.mean(losses)),
                       **{f"held_out_{name}": value for name, value in scores.items()},
                       "skipped": train.skipped + held.skipped}
                losses = []
                rows.append(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", **{k: f"{v:.2f}" for k, v in scores.items()})
                if on_row is not None:
                    on_row(row)
    finally:
        bar.close()
        for n, p in vlm.named_parameters():
            p.requires_grad_(before[n])
        vlm.train(was_training)
    return rows
