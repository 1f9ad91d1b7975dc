"""Grounding map: where in a query frame the [SEG] token points, as a dense prompt for SAM 2.

Not in GLUS, which passes [SEG] to SAM 2 as a sparse prompt only. A tiny LLM trained from scratch
learns *what* an expression names long before it learns to write *where* that object is into one
vector (measured: 38-84% of predicted masks sat on a look-alike; docs/training.md). The LLM's own
hidden states at a query frame's visual tokens already hold what it has read about each cell of that
frame (appearance, and motion from the context frames before it in the sequence); matching the [SEG]
state against them gives a coarse map of the referred object, which enters the SAM 2 mask decoder
through its mask-prompt path (``sam_prompt_encoder`` masks input) alongside the sparse prompt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroundingMap(nn.Module):
    """Scaled dot product between a projected [SEG] state and each projected visual-token state."""

    def __init__(self, hidden: int, dim: int = 64) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, dim)
        self.key = nn.Linear(hidden, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, seg_hidden: torch.Tensor, frame_tokens: torch.Tensor) -> torch.Tensor:
        """seg_hidden (..., D), frame_tokens (..., T, D) with T a square grid -> logits (..., G, G), row = y."""
        tokens = frame_tokens.shape[-2]
        side = round(tokens**0.5)
        if side * side != tokens:
            raise ValueError(f"a grounding map needs a square token grid per frame, got {tokens} tokens")
        q = self.query(seg_hidden.float())
        k = self.key(frame_tokens.float())
        logits = torch.einsum("...d,...td->...t", q, k) * self.scale
        return logits.unflatten(-1, (side, side))


def mask_prompt(grid_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, G, G) map logits -> (B, 1, H, W) SAM 2 mask-prompt logits (bilinear, the prompt encoder's input size)."""
    return F.interpolate(grid_logits[:, None].float(), size=size, mode="bilinear", align_corners=False)


def grid_targets(masks: torch.Tensor, side: int) -> torch.Tensor:
    """(..., H, W) {0,1} masks -> (..., side, side) {0,1}: whether any pixel of the target falls in a cell."""
    lead = masks.shape[:-2]
    pooled = F.adaptive_max_pool2d(masks.float().reshape(-1, 1, *masks.shape[-2:]), side)
    return pooled.reshape(*lead, side, side)
