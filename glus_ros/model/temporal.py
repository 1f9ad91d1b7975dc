"""Temporal module (VideoMolmo): each frame's visual tokens attend to the tokens of the frames before it.

The MLLM sees every frame as an independent set of tokens; VideoMolmo adds a cross-attention step
before the LLM so a frame is read in the light of the preceding frames (temporal consistency). Here
it acts on the projected frame tokens ``(B, F, T, D)`` in the order given: frame ``f`` queries the
tokens of frames ``< f`` (the first frame has nothing to attend to and passes through). The output
projection starts at zero, so switching the module on leaves a model's outputs unchanged until it
is trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalModule(nn.Module):
    def __init__(self, hidden: int, heads: int = 4, window: int | None = None) -> None:
        super().__init__()
        if heads < 1 or hidden % heads:
            raise ValueError(f"temporal module: hidden size {hidden} is not divisible by {heads} heads")
        if window is not None and window < 1:
            raise ValueError(f"temporal module: window must be >= 1 frame or None (all), got {window}")
        self.heads = heads
        self.window = window       # how many preceding frames a frame may attend to (None: all)
        self.norm = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key_value = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.out.weight)   # identity at init: enabling the option changes nothing yet
        nn.init.zeros_(self.out.bias)

    def attention_mask(self, num_frames: int, tokens: int, device: torch.device) -> torch.Tensor:
        """(F*T, F*T) bool: query token of frame f may see key tokens of frames f-window .. f-1."""
        frame = torch.arange(num_frames, device=device).repeat_interleave(tokens)
        gap = frame[:, None] - frame[None, :]
        allowed = gap > 0
        if self.window is not None:
            allowed &= gap <= self.window
        return allowed

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, F, T, D) in temporal order -> (B, F, T, D): ``x + out(attn(norm(x), earlier frames))``."""
        if frames.dim() != 4:
            raise ValueError(f"temporal module expects (B, frames, tokens, hidden), got {tuple(frames.shape)}")
        batch, num_frames, tokens, hidden = frames.shape
        if num_frames < 2:
            return frames
        x = self.norm(frames.reshape(batch, num_frames * tokens, hidden))
        head_dim = hidden // self.heads
        q = self.query(x).view(batch, -1, self.heads, head_dim).transpose(1, 2)
        k, v = self.key_value(x).view(batch, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        allowed = self.attention_mask(num_frames, tokens, frames.device)
        scores = (q @ k.transpose(-2, -1)) / head_dim**0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        # rows of the first frame see nothing: their softmax would be NaN, their update is zero instead
        has_keys = allowed.any(dim=1)
        weights = F.softmax(scores.masked_fill(~has_keys[:, None], 0.0), dim=-1) * has_keys[:, None]
        attended = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(batch, num_frames * tokens, hidden)
        update = self.out(attended).view(batch, num_frames, tokens, hidden)
        return frames + update.to(frames.dtype)
