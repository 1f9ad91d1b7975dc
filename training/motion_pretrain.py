"""Motion pre-training: the grounding map's motion field learns how each cell's content moves before the
main stage reads it.

Why (measured, docs/training.md): trained end to end inside the main stage (batch 8, lr 3e-4, its
gradient clipped together with everything else) the field's per-cell motion loss went from 0.66 to
0.43 in 1,500 steps, against 0.60 for a field that says nothing moves; alone on the same task (batch
32 context clips, lr 1e-3) it reaches 0.13 on unseen videos in 1,500 steps of a few seconds each on 2
CPU cores (no LLM, no SAM 2). This stage trains only ``model.grounding_map.motion`` on the per-cell
moves of a synthetic split (``SynthMotionCells``), before the main stage; every ``eval_every`` steps it
reports the loss on clips of videos it does not train on (the split's last ``held_out`` videos).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from glus_ros.model.glus import GLUSModel
from glus_ros.model.transforms import clip_input, to_tensor
from glus_ros.sampling import sample_context_frames
from glus_ros.training.aux_heads import SynthMotionCells, motion_cell_loss
from glus_ros.training.config import MotionPretrainSpec

log = logging.getLogger(__name__)


def _field(model: GLUSModel) -> torch.nn.Module:
    if model.grounding_map is None or model.grounding_map.motion is None:
        raise ValueError("motion pre-training needs a model whose grounding map has a motion field "
                         "(vlm.grounding_motion, e.g. model_overrides: {vlm: {grounding_motion: 4}})")
    return model.grounding_map.motion


def motion_state(model: GLUSModel) -> dict[str, torch.Tensor]:
    """The motion field's weights, detached on the CPU (what the trainer caches between runs)."""
    return {n: p.detach().cpu().clone() for n, p in _field(model).named_parameters()}


def load_motion_state(model: GLUSModel, state: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`motion_state` into a model's motion field; a mismatch is an error naming it."""
    field = _field(model)
    try:
        field.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"cached motion-field weights do not fit this model: {err}") from None


class ContextClips:
    """Context frames of a synthetic split (sampled as in training) with their per-cell moves."""

    def __init__(self, reader: Any, labels: SynthMotionCells, videos: list[str], image_size: int, num_frames: int,
                 on_error: str = "skip") -> None:
        if not videos:
            raise ValueError("no videos to draw context clips from")
        self.reader, self.labels, self.videos = reader, labels, videos
        self.image_size, self.num_frames = image_size, num_frames
        self.on_error = on_error
        self.skipped = 0

    def _one(self, rng: random.Random) -> tuple[torch.Tensor, np.ndarray]:
        for _ in range(100):
            video = self.videos[rng.randrange(len(self.videos))]
            names = self.reader.frames(video)
            frames = sample_context_frames(len(names), self.num_frames, rng)
            try:
                pixels = to_tensor([self.reader.load_frame(video, names[t]) for t in frames])
                moves = self.labels(video, frames)
            except (OSError, ValueError, KeyError, IndexError) as err:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                log.warning("motion pre-training: skipped a clip of %s (%s)", video, err)
                continue
            return clip_input(pixels, self.image_size), moves
        raise RuntimeError("motion pre-training: 100 clips in a row could not be read; is the split corrupt?")

    def batch(self, size: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """(size, F, 3, S, S) CLIP-normalised context frames and (size, G, G, C) moves (SynthMotionCells)."""
        pairs = [self._one(rng) for _ in range(size)]
        return torch.stack([p for p, _ in pairs]), torch.from_numpy(np.stack([y for _, y in pairs]))


def pretrain_motion(model: GLUSModel, reader: Any, labels: SynthMotionCells, spec: MotionPretrainSpec, seed: int = 0,
                    on_error: str = "skip", progress: bool = True,
                    on_row: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train the motion field alone on the per-cell moves; returns one row per evaluation.

    Other weights are untouched and every parameter's ``requires_grad`` is restored afterwards.
    """
    from tqdm import tqdm

    spec.check("motion_pretrain")
    field = _field(model)
    videos = list(reader.videos())
    if spec.held_out >= len(videos):
        raise ValueError(f"motion_pretrain: held_out {spec.held_out} leaves no training videos "
                         f"(the split has {len(videos)})")
    device = next(field.parameters()).device
    size, frames = model.cfg.vlm.image_size, model.cfg.vlm.grounding_motion
    side = labels.grid
    train = ContextClips(reader, labels, videos[: -spec.held_out], size, frames, on_error)
    held = ContextClips(reader, labels, videos[-spec.held_out:], size, frames, on_error)
    held_px, held_y = held.batch(spec.eval_clips, random.Random(f"motion-held:{seed}"))
    before = {n: p.requires_grad for n, p in field.named_parameters()}
    for p in field.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(field.parameters(), lr=spec.lr)
    rng = random.Random(f"motion-train:{seed}")
    rows: list[dict[str, float]] = []
    losses: list[float] = []
    was_training = field.training
    field.train()
    bar = tqdm(total=spec.steps, desc="motion pre-training", unit="step", disable=not progress)
    try:
        for step in range(1, spec.steps + 1):
            px, y = train.batch(spec.batch_size, rng)
            loss = motion_cell_loss(field(px.to(device), side), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % spec.eval_every == 0 or step == spec.steps:
                with torch.no_grad():
                    held_loss = float(motion_cell_loss(field(held_px.to(device), side), held_y))
                still = float(motion_cell_loss(torch.zeros(*held_y.shape[:1], side * side, held_y.shape[-1] - 1),
                                               held_y))
                row = {"step": step, "loss": float(np.mean(losses)), "held_out_loss": held_loss,
                       "held_out_still": still, "skipped": train.skipped + held.skipped}
                losses = []
                rows.append(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", held_out=f"{held_loss:.3f}")
                if on_row is not None:
                    on_row(row)
    finally:
        bar.close()
        for n, p in field.named_parameters():
            p.requires_grad_(before[n])
        field.train(was_training)
    return rows
