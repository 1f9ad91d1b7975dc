"""Motion field: what moved where across the context frames, per token cell, for the grounding map.

Not in GLUS. The tiny model sees motion only as 16 tokens per frame, and the synthetic objects move
about a third of a token cell over a clip (docs/training.md): the LLM never learned to tell "the circle
that moves left" from its still look-alike (the map ranked the target first at chance). This module
reads the context frames' pixels directly — they span the whole video in time order — and writes one
vector per token cell saying how the content there moved; the grounding map's spatial terms read the
vector the [SEG] state and the words choose (``SpatialTerms`` motion term). Objects stay near the cell
where they moved, so a query frame's cell finds its object's motion in the same cell of the field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MotionField(nn.Module):
    """(B, Nc, 3, S, S) context frames in time order -> (B, G*G, dim) motion vectors, row-major cells.

    Each frame and each consecutive difference enters a small strided conv stack at half resolution;
    the differences are given explicitly because motion is what the module must find, and a conv on the
    frames alone would have to learn to subtract first.
    """

    def __init__(self, num_frames: int, dim: int = 32, width: int = 32) -> None:
        super().__init__()
        if num_frames < 2:
            raise ValueError(f"a motion field needs at least 2 context frames, got {num_frames}")
        self.num_frames = num_frames
        channels = 3 * num_frames + 3 * (num_frames - 1)
        self.convs = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, dim, 3, padding=1),
        )
        self.dim = dim

    def forward(self, frames: torch.Tensor, side: int) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[1] != self.num_frames or frames.shape[2] != 3:
            raise ValueError(f"motion field: expected (B, {self.num_frames}, 3, S, S) context frames, "
                             f"got shape {tuple(frames.shape)}")
        frames = frames.float()
        diffs = frames[:, 1:] - frames[:, :-1]
        x = torch.cat([frames, diffs], dim=1).flatten(1, 2)                  # (B, C, S, S)
        x = F.avg_pool2d(x, 2) if x.shape[-1] >= 32 else x
        x = F.adaptive_avg_pool2d(self.convs(x), side)                         # (B, dim, G, G)
        return x.flatten(2).transpose(1, 2)                                    # (B, G*G, dim)
