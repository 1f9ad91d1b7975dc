"""SAM 3's inputs: frames as the released processor prepares them, and the noun phrase as its text encoder reads it.

Why our own: transformers' ``Sam3ImageProcessor`` (and the video processor) are torchvision classes, and a CPU
install cannot have torchvision (docs/backends.md). What it computes (transformers' ``image_processing_sam3.py``
class defaults, ``TorchvisionBackend._preprocess``, and the folder's processor config):

- the RGB frame resized to ``size`` x ``size`` (aspect ratio not kept), bilinear with antialiasing, on the uint8
  image as torchvision does it: natively in uint8 where torchvision does (CPU with AVX2), else in float, rounded
  and clamped back to uint8 (``resize_frames``);
- rescaled and normalised in one step: ``(x - mean / r) / (std / r)`` with ``r`` the rescale factor.

The phrase: tokenised by the folder's CLIP tokenizer padded to the text encoder's 32 positions (start and end
tokens included), as ``Sam3VideoProcessor.add_text_prompt`` does; a longer phrase would not fit and is refused
here (transformers would fail inside the text encoder).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glus_ros.model.prompting import clean_expression
from glus_ros.model.task_adapter import COUNTING, task_of

BILINEAR = 2   # PIL resample code of the released processor
TEXT_POSITIONS = 32   # the released text encoder's max_position_embeddings (Sam3VideoProcessor pads to it)
_COUNTING = re.compile(r"^\s*how\s+many\s+(?P<phrase>.+?)(?:\s+(?:are|is|were|can|could|do|does|did|will|"
                       r"would|have|has)\b.*)?\s*\?*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class FramePreprocessing:
    """The image processor part of a SAM 3 folder (defaults: transformers' ``Sam3ImageProcessor``)."""

    size: int = 1008
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str) -> FramePreprocessing:
        size = raw.get("size") or {"height": cls.size, "width": cls.size}
        if not isinstance(size, dict) or size.get("height") != size.get("width") or not size.get("height"):
            raise ValueError(f"{source}: SAM 3 frames are square: size needs equal 'height' and 'width', got {size}")
        if raw.get("resample", BILINEAR) != BILINEAR:
            raise ValueError(f"{source}: only bilinear resampling (resample 2) is implemented, got {raw['resample']}")
        for key in ("do_resize", "do_rescale", "do_normalize"):
            if raw.get(key, True) is not True:
                raise ValueError(f"{source}: {key} must be true (the vision backbone reads a fixed, normalised grid)")
        return cls(size=int(size["height"]), mean=_triple(raw.get("image_mean", cls.mean), source),
                   std=_triple(raw.get("image_std", cls.std), source),
                   rescale_factor=float(raw.get("rescale_factor", cls.rescale_factor)))


def _triple(value: Any, source: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{source}: image_mean / image_std need 3 values, got {value}")
    return values[0], values[1], values[2]


def native_uint8_resize(device: torch.device) -> bool:
    """Whether torchvision resizes a uint8 image in uint8 (bilinear on a CPU with AVX2) rather than in float."""
    return device.type == "cpu" and "AVX2" in torch.backends.cpu.get_cpu_capability()


def resize_frames(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) uint8, bilinear with antialiasing (module doc)."""
    if images.shape[-2:] == (size, size):
        return images
    if native_uint8_resize(images.device):
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def preprocess_frames(frames: Sequence[np.ndarray], proc: FramePreprocessing,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB uint8 frames (H, W, 3), all one size -> (N, 3, S, S) float32 pixel values."""
    images = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).contiguous()
    resized = resize_frames(images, proc.size).float()
    scale = 1.0 / proc.rescale_factor   # multiplied, not divided: bit-identical to transformers' fused constants
    mean = torch.tensor(proc.mean, device=resized.device)[:, None, None] * scale
    std = torch.tensor(proc.std, device=resized.device)[:, None, None] * scale
    return (resized - mean) / std


def concept_phrase(expression: str) -> str:
    """The noun phrase SAM 3 is asked for: a counting question's object ("how many red cups are there?" ->
    "red cups"), else the expression without closing punctuation."""
    text = clean_expression(expression)
    if task_of(text) == COUNTING:
        found = _COUNTING.match(text)
        if found is None or not found.group("phrase").strip(" ?"):
            raise ValueError(f"cannot read the objects to count in {expression!r} (ask 'how many <objects> ...?')")
        text = found.group("phrase")
    text = text.strip().rstrip(".!?").strip()
    if not text:
        raise ValueError(f"no noun phrase in {expression!r}: SAM 3 needs something to look for, e.g. 'the mugs'")
    return text


@dataclass
class PhraseTokens:
    input_ids: torch.Tensor        # (1, TEXT_POSITIONS)
    attention_mask: torch.Tensor   # (1, TEXT_POSITIONS)


def tokenize_phrase(tokenizer, phrase: str, positions: int = TEXT_POSITIONS) -> PhraseTokens:
    """The phrase padded to the text encoder's positions; ValueError when it does not fit (module doc)."""
    encoded = tokenizer(phrase, return_tensors="pt", padding="max_length", max_length=positions)
    length = int(encoded.input_ids.shape[1])
    if length > positions:
        raise ValueError(f"the phrase {phrase!r} is {length} tokens; SAM 3's text encoder reads at most {positions} "
                         "(start and end tokens included): use a short noun phrase such as 'red mugs'")
    return PhraseTokens(encoded.input_ids, encoded.attention_mask)
