"""Visual position embedding: each frame token is told which cell of the frame it covers.

The LLM places a frame's tokens in one row-major run, so the only position it sees is the token's
index in the sequence (RoPE). Telling "the circle on the left" from its look-alike, or "moves left"
from "moves right", needs the row and column of a token; learning them as ``index mod side`` is hard
for a small model. This module adds a learned per-cell vector to every frame's projected tokens
(context, query and key-frame inputs alike). It starts from a 2D sine-cosine code (half the channels
for the row, half for the column) so each cell is distinct from the first step.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def grid_sincos(side: int, hidden: int) -> torch.Tensor:
    """(side * side, hidden) row-major 2D sine-cosine code: channels [0, hidden/2) encode the row,
    the rest the column; periods from 2 cells up to 4 times the grid side."""
    if side < 1:
        raise ValueError(f"visual position: the token grid needs a side >= 1, got {side}")
    if hidden < 4 or hidden % 4:
        raise ValueError(f"visual position: hidden size must be a multiple of 4, got {hidden}")
    quarter = hidden // 4
    # periods spread geometrically between 2 cells and 4 * side cells (so the lowest is monotonic)
    periods = torch.logspace(math.log10(2.0), math.log10(4.0 * side), quarter)
    cells = torch.arange(side, dtype=torch.float32)
    angles = 2 * math.pi * cells[:, None] / periods[None, :]                  # (side, quarter)
    code = torch.cat([angles.sin(), angles.cos()], dim=1)                      # (side, hidden / 2)
    rows = code[:, None, :].expand(side, side, hidden // 2)
    cols = code[None, :, :].expand(side, side, hidden // 2)
    return torch.cat([rows, cols], dim=-1).reshape(side * side, hidden)


class VisualPositionEmbedding(nn.Module):
    """A learned (tokens_per_frame, hidden) table added to each frame's tokens."""

    def __init__(self, tokens_per_frame: int, hidden: int) -> None:
        super().__init__()
        side = round(tokens_per_frame**0.5)
        if side * side != tokens_per_frame:
            raise ValueError(f"visual position: needs a square token grid per frame, got {tokens_per_frame} tokens")
        self.table = nn.Parameter(grid_sincos(side, hidden))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (..., T, hidden) -> tokens plus the cell code of each of the T positions."""
        if tokens.shape[-2:] != self.table.shape:
            raise ValueError(f"visual position: expected (..., {self.table.shape[0]}, {self.table.shape[1]}) "
                             f"frame tokens, got {tuple(tokens.shape)}")
        return tokens + self.table.to(tokens.dtype)
