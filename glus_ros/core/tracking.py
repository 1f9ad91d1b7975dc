"""The SAM 2 side of a window-loop step: a frame's prompt through memory read, mask decoder and memory write,
and the frame's mask from the decoder's logits, as the model's ``loop`` section says."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from glus_ros.model.config import LoopConfig
from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.sam2_head import FrameFeatures, MaskPrediction
from glus_ros.model.transforms import logits_to_frame

VISIBLE_ABOVE = 0.5  # sigmoid(object_score) above this shows the mask (SAM 2's own rule)


def frame_logits(prediction: MaskPrediction, height: int, width: int, loop: LoopConfig) -> torch.Tensor:
    """(B, H, W) mask logits at the frame's size: the SAM-size logits resized (``mask_resize: sam_input``) or the
    decoder's low-res logits resized once (``low_res``, the official inference)."""
    if loop.mask_resize == "low_res":
        return F.interpolate(prediction.low_res_logits.float(), size=(height, width), mode="bilinear",
                             align_corners=False)[:, 0]
    return logits_to_frame(prediction.logits, height, width)


def frame_mask(prediction: MaskPrediction, height: int, width: int, loop: LoopConfig) -> tuple[np.ndarray, float]:
    """(mask (H, W) bool, visibility probability) of the first row; with ``visibility_gate`` a frame whose object
    score says "not visible" has an empty mask."""
    score = float(torch.sigmoid(prediction.object_score.float())[0, 0])
    mask = (frame_logits(prediction, height, width, loop)[0] > 0).cpu().numpy()
    if loop.visibility_gate and not score > VISIBLE_ABOVE:
        mask = np.zeros_like(mask)
    return mask, score


def track_frame(model: GLUSModel, features: FrameFeatures, prompt: torch.Tensor, bank: MemoryBank | None,
                grid: torch.Tensor | None = None) -> MaskPrediction:
    """One tracking step: memory read, decode with ``prompt`` (1, prompt_dim) in the SAM weights' dtype (as the
    official code casts it) and the grounding map ``grid``, memory write."""
    dtype = next(model.sam.parameters()).dtype
    if dtype != torch.float32:  # low-precision weights (the release in bf16); fp32 weights under autocast: as is
        prompt = prompt.to(dtype)
    return model.track_step(features, prompt, bank, grid)
