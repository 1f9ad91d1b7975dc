"""Shared builders for tests that need the real tiny model (random init, CPU)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from glus_ros.model.glus import GLUSModel


@functools.lru_cache(maxsize=1)
def _cached_tiny() -> GLUSModel:
    torch.manual_seed(0)
    return GLUSModel.from_config("tiny").eval()


def tiny_model() -> GLUSModel:
    """The tiny model with fixed random weights (shared; tests must not modify it)."""
    return _cached_tiny()


def moving_disk_clip(num_frames: int = 10, height: int = 72, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """A red disk moving right over noise: a clip whose content every test can predict."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(num_frames):
        frame = (rng.random((height, width, 3)) * 60).astype(np.uint8)
        cx, cy = 15 + 5 * t, height // 2
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= 100] = (230, 30, 30)
        frames.append(frame)
    return frames
