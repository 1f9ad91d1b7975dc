"""Key-frame selector (GLUS Sec. 4.4 / B.4): which frame should segmentation start from?

A small video scorer on features the model already has: each frame's visual tokens (the MLLM's
inputs) are pooled with attention from the expression's word embeddings, a temporal convolution
lets neighbouring frames inform each other, and a linear head predicts the IoU the model would
reach on that frame. It is trained on the model's own per-frame IoU (pseudo-labels, see
``glus_ros.training.key_frame``); at inference the best-scoring frame starts the segmentation, which
then propagates forward and backward from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glus_ros.model.config import KeyFrameConfig


class KeyFrameSelector(nn.Module):
    def __init__(self, llm_hidden: int, cfg: KeyFrameConfig) -> None:
        super().__init__()
        if cfg.kernel < 1 or cfg.kernel % 2 == 0:
            raise ValueError(f"key_frame.kernel must be odd and >= 1, got {cfg.kernel}")
        self.text = nn.Linear(llm_hidden, cfg.hidden)
        self.frame = nn.Linear(llm_hidden, cfg.hidden)
        self.temporal = nn.Conv1d(2 * cfg.hidden, cfg.hidden, cfg.kernel, padding=cfg.kernel // 2)
        self.head = nn.Linear(cfg.hidden, 1)

    def forward(self, frame_tokens: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
        """frame_tokens (T, N, D) visual tokens per frame, text_tokens (L, D) expression embeddings -> (T,) logits.

        ``sigmoid(logits)`` is the predicted IoU of each frame.
        """
        if frame_tokens.dim() != 3 or text_tokens.dim() != 2:
            raise ValueError(f"expected (T, N, D) and (L, D), got {tuple(frame_tokens.shape)} and "
                             f"{tuple(text_tokens.shape)}")
        query = self.text(text_tokens.float()).mean(dim=0)                    # (H,)
        keys = self.frame(frame_tokens.float())                                # (T, N, H)
        attn = torch.softmax(keys @ query / keys.shape[-1] ** 0.5, dim=1)      # (T, N)
        pooled = (attn.unsqueeze(-1) * keys).sum(dim=1)                        # (T, H)
        mixed = torch.cat([pooled, pooled * query], dim=-1)                    # (T, 2H)
        hidden = F.gelu(self.temporal(mixed.t().unsqueeze(0)))[0].t()         # (T, H)
        return self.head(hidden)[:, 0]
