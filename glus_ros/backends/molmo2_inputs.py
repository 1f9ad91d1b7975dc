"""Molmo2's video input: the frames as patch tensors, pooling indices and the prompt string with timestamps.

transformers' ``Molmo2VideoProcessor`` resizes with torchvision, which CPU installs cannot have
(docs/backends.md). This module is the project's own implementation of the same documented
preprocessing, used when torchvision does not import; with torchvision, transformers' processor is used
(``Molmo2Inputs``). What it computes (facts from transformers' ``video_processing_molmo2.py`` /
``processing_molmo2.py`` and the released ``video_preprocessor_config.json`` / ``processor_config.json``):

- every frame resized to ``size`` x ``size`` (bilinear, no antialiasing, in float, then rounded back to
  uint8), rescaled and normalised in one step: ``(x - mean / r) / (std / r)`` with ``r`` the rescale factor;
- patchified into ``(T, (S/p)^2, p*p*3)``: patches in row-major order, a patch's pixels row, column, channel;
- pooling indices: the (S/p) x (S/p) patch grid, padded with -1 to a multiple of the pooling window
  (half before, half after), cut into ``pool_h x pool_w`` windows in row-major order, offset by
  ``frame * patches_per_frame``; ``video_grids`` = ``[[T, rows, cols]]``;
- the prompt: the chat template puts ``<|video|>`` before the user turn; it is replaced by, per frame,
  ``"{time:.1f} "`` (a space before every frame but the first), a start token (``<frame_start>``, or
  ``<im_start>`` when ``use_frame_special_tokens`` is false, as in the released folders), ``rows`` rows of
  ``cols`` ``<im_patch>`` (each row followed by ``<im_col>`` when ``video_use_col_tokens``) and the end
  token; the text starts with the BOS token (the tokenizer's, else its EOS), added when missing;
- ``mm_token_type_ids`` 1 on every image-structure token (patch, column, start and end tokens), 0 elsewhere:
  the model lets all of them attend to each other.

Frame sampling (``sample_frame_indices``) is the released processor's ``uniform_last_frame`` rule.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_STRUCTURE_TOKENS = ("<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>", "<frame_start>",
                          "<im_end>", "<frame_end>", "<im_low>")
VIDEO_TOKEN = "<|video|>"
BILINEAR = 2   # PIL resample code the released configs use


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


@dataclass(frozen=True)
class VideoProcessing:
    """The video part of a Molmo2 folder's ``video_preprocessor_config.json`` (defaults: transformers')."""

    size: int = 378
    patch_size: int = 14
    pooling: tuple[int, int] = (3, 3)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True
    max_fps: float | None = 2.0
    num_frames: int = 64
    frame_sample_mode: str = "uniform_last_frame"

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str) -> VideoProcessing:
        size = raw.get("size") or {"height": cls.size, "width": cls.size}
        if not isinstance(size, dict) or size.get("height") != size.get("width") or not size.get("height"):
            raise ValueError(f"{source}: Molmo2 frames are square: size needs equal 'height' and 'width', got {size}")
        if raw.get("resample", BILINEAR) != BILINEAR:
            raise ValueError(f"{source}: only bilinear resampling (resample 2) is implemented, got {raw['resample']}")
        if raw.get("do_resize", True) is not True:
            raise ValueError(f"{source}: do_resize must be true (the vision tower reads a fixed grid)")
        mode = raw.get("frame_sample_mode", "uniform_last_frame")
        if mode != "uniform_last_frame":
            raise ValueError(f"{source}: frame_sample_mode {mode!r} is not implemented (uniform_last_frame is)")
        pooling = tuple(int(v) for v in raw.get("pooling_size", cls.pooling))
        out = cls(size=int(size["height"]), patch_size=int(raw.get("patch_size", cls.patch_size)),
                  pooling=(pooling[0], pooling[1]), mean=_triple(raw.get("image_mean", cls.mean), source),
                  std=_triple(raw.get("image_std", cls.std), source),
                  rescale_factor=float(raw.get("rescale_factor", cls.rescale_factor)),
                  do_rescale=bool(raw.get("do_rescale", True)), do_normalize=bool(raw.get("do_normalize", True)),
                  max_fps=None if raw.get("max_fps", cls.max_fps) is None else float(raw.get("max_fps", cls.max_fps)),
                  num_frames=int(raw.get("num_frames", cls.num_frames)), frame_sample_mode=mode)
        if out.size % out.patch_size or min(out.pooling) < 1 or out.num_frames < 1:
            raise ValueError(f"{source}: size {out.size} must be a multiple of patch_size {out.patch_size}, "
                             "pooling_size and num_frames >= 1")
        return out

    @property
    def patches_per_side(self) -> int:
        return self.size // self.patch_size

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of pooled tokens per frame."""
        side = self.patches_per_side
        return -(-side // self.pooling[0]), -(-side // self.pooling[1])


def _triple(values: Any, source: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = [values] * 3
    if len(values) != 3:
        raise ValueError(f"{source}: image_mean / image_std need 3 values, got {values}")
    return float(values[0]), float(values[1]), float(values[2])


@dataclass(frozen=True)
class TokenLayout:
    """How frames are written into the prompt (``processor_config.json``; defaults: transformers')."""

    use_frame_special_tokens: bool = True
    video_use_col_tokens: bool = False

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TokenLayout:
        return cls(bool(raw.get("use_frame_special_tokens", True)), bool(raw.get("video_use_col_tokens", False)))


# --- pixels -------------------------------------------------------------------------------------
def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, size, size) uint8: bilinear without antialiasing, in float, rounded back."""
    resized = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False,
                            antialias=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def rescale_normalise(frames: torch.Tensor, proc: VideoProcessing) -> torch.Tensor:
    """uint8 -> float32: rescale and normalise fused, ``(x - mean / r) / (std / r)`` (as transformers does)."""
    images = frames.to(torch.float32)
    if proc.do_rescale and proc.do_normalize:
        mean = torch.tensor(proc.mean) * (1.0 / proc.rescale_factor)
        std = torch.tensor(proc.std) * (1.0 / proc.rescale_factor)
        return images.sub_(mean[:, None, None]).div_(std[:, None, None])
    if proc.do_normalize:
        return images.sub_(torch.tensor(proc.mean)[:, None, None]).div_(torch.tensor(proc.std)[:, None, None])
    if proc.do_rescale:
        return images * proc.rescale_factor
    return images


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(T, S, S, C) -> (T, (S/p)^2, p*p*C): row-major patches, each patch's pixels row, column, channel."""
    frames, height, width, channels = images.shape
    rows, cols = height // patch, width // patch
    grid = images.reshape(frames, rows, patch, cols, patch, channels).transpose(2, 3)
    return grid.reshape(frames, rows * cols, patch * patch * channels)


def pooling_windows(rows: int, cols: int, pool_h: int, pool_w: int) -> tuple[torch.Tensor, int, int]:
    """Patch indices of each pooled token (-1: padding) for one frame's grid; returns (indices, rows, cols)."""
    grid = torch.arange(rows * cols, dtype=torch.int64).reshape(rows, cols)
    pad_h, pad_w = -rows % pool_h, -cols % pool_w
    grid = F.pad(grid, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=-1)
    out_rows, out_cols = grid.shape[0] // pool_h, grid.shape[1] // pool_w
    windows = grid.reshape(out_rows, pool_h, out_cols, pool_w).permute(0, 2, 1, 3)
    return windows.reshape(out_rows * out_cols, pool_h * pool_w), out_rows, out_cols


def video_tensors(frames: Sequence[np.ndarray], proc: VideoProcessing) -> dict[str, torch.Tensor]:
    """RGB uint8 frames (one size) -> ``pixel_values_videos``, ``video_token_pooling``, ``video_grids``."""
    if len(frames) == 0:
        raise ValueError("a Molmo2 video needs at least one frame")
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    images = rescale_normalise(resize_frames(stacked, proc.size), proc).permute(0, 2, 3, 1)
    patches = patchify(images, proc.patch_size)
    side = proc.patches_per_side
    windows, rows, cols = pooling_windows(side, side, *proc.pooling)
    offsets = (torch.arange(len(frames)) * side * side).view(-1, 1, 1)
    pooled = torch.where(windows >= 0, windows + offsets, windows).reshape(-1, windows.shape[-1])
    return {"pixel_values_videos": patches, "video_token_pooling": pooled,
            "video_grids": torch.tensor([[len(frames), rows, cols]], dtype=torch.int64)}


# --- text ---------------------------------------------------------------------------------------
def video_prompt_string(num_frames: int, rows: int, cols: int, timestamps: Sequence[float],
                        layout: TokenLayout) -> str:
    """The text that replaces ``<|video|>``: per frame its time and its tokens (module doc)."""
    if len(timestamps) != num_frames:
        raise ValueError(f"{num_frames} frames but {len(timestamps)} timestamps")
    start, end = ("<frame_start>", "<frame_end>") if layout.use_frame_special_tokens else ("<im_start>", "<im_end>")
    row = "<im_patch>" * cols + ("<im_col>" if layout.video_use_col_tokens else "")
    frame = start + row * rows + end
    return " ".join(f"{time:.1f} {frame}" for time in timestamps)


def mm_token_type_ids(input_ids: torch.Tensor, image_token_ids: Sequence[int]) -> torch.Tensor:
    """1 where a token is part of a frame's structure, 0 elsewhere (same shape as ``input_ids``)."""
    return torch.isin(input_ids, torch.tensor(list(image_token_ids), dtype=input_ids.dtype)).long()


# --- frame choice -------------------------------------------------------------------------------
def sample_frame_indices(num_frames: int, fps: float, proc: VideoProcessing) -> list[int]:
    """``uniform_last_frame``: every (fps / max_fps)-th frame plus the last one, or, when that gives more
    than ``num_frames``, ``num_frames`` frames spread evenly from the first to the last."""
    if num_frames < 1:
        raise ValueError("no frames to sample from")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    most = proc.num_frames
    if num_frames <= 2:
        return list(range(num_frames))
    if proc.max_fps is not None and num_frames / fps <= (most - 1) / proc.max_fps:
        picks = np.arange(0.0, num_frames - 1, fps / proc.max_fps)
        if round(picks[-1]) != num_frames - 1:
            picks = np.append(picks, num_frames - 1)
        return sorted({int(i) for i in np.round(picks)})
    return sorted({int(i) for i in np.linspace(0, num_frames - 1, num=min(most, num_frames)).astype(int)})


# --- the whole input --------------------------------------------------------------------------------
class Molmo2Inputs:
    """Model inputs for (frames, timestamps, question): transformers' processor pieces when torchvision
    imports (``mode="transformers"``), the project's implementation otherwise (``"own"``); ``"auto"`` picks."""

    def __init__(self, folder: Path, tokenizer, chat_template: str, proc: VideoProcessing, layout: TokenLayout,
                 mode: str = "auto") -> None:
        if mode not in ("auto", "own", "transformers"):
            raise ValueError(f"preprocessing must be auto, own or transformers, got {mode!r}")
        if mode == "transformers" and not torchvision_available():
            raise ValueError("preprocessing 'transformers' needs torchvision, which is not installed here; "
                             "use 'own' or 'auto'")
        if mode == "auto":
            mode = "transformers" if torchvision_available() else "own"
        self.mode = mode
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.proc = proc
        self.layout = layout
        missing = [t for t in (*IMAGE_STRUCTURE_TOKENS, VIDEO_TOKEN) if tokenizer.convert_tokens_to_ids(t) in
                   (None, tokenizer.unk_token_id)]
        if missing:
            raise ValueError(f"{folder}: the tokenizer lacks Molmo2's image tokens {missing}")
        self.image_token_ids = tokenizer.convert_tokens_to_ids(list(IMAGE_STRUCTURE_TOKENS))
        self.processor = None
        if self.mode == "transformers":  # GPU installs: transformers' own processor for pixels and strings
            from transformers import Molmo2Processor

            self.processor = Molmo2Processor.from_pretrained(str(folder))

    @property
    def bos_token(self) -> str:
        return self.tokenizer.bos_token or self.tokenizer.eos_token

    def prompt_text(self, question: str) -> str:
        """The chat-templated prompt with ``<|video|>`` still in it (the tokenizer renders the folder's template)."""
        messages = [{"role": "user", "content": [{"type": "text", "text": question}, {"type": "video"}]}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=True)
        if text.count(VIDEO_TOKEN) != 1:
            raise ValueError(f"the chat template must place exactly one {VIDEO_TOKEN} for a video, got "
                             f"{text.count(VIDEO_TOKEN)}")
        return text

    def video(self, frames: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        if self.processor is not None:
            out = self.processor.video_processor(videos=[np.stack(frames)], do_sample_frames=False,
                                                 return_tensors="pt")
            return {k: out[k] for k in ("pixel_values_videos", "video_token_pooling", "video_grids")}
        return video_tensors(frames, self.proc)

    def video_string(self, grid: torch.Tensor, timestamps: Sequence[float]) -> str:
        if self.processor is not None:
            return self.processor.get_video_string(grid, list(timestamps))
        frames, rows, cols = (int(v) for v in grid.tolist())
        return video_prompt_string(frames, rows, cols, timestamps, self.layout)

    def build(self, frames: Sequence[np.ndarray], timestamps: Sequence[float], question: str,
              video: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Everything ``Molmo2ForConditionalGeneration.generate`` reads (``video``: from ``self.video``)."""
        video = self.video(frames) if video is None else video
        text = self.prompt_text(question).replace(VIDEO_TOKEN, self.video_string(video["video_grids"][0], timestamps))
        if not text.startswith(self.bos_token):
            text = self.bos_token + text
        encoded = self.tokenizer(text, return_tensors="pt")
        ids = encoded["input_ids"]
        return {"input_ids": ids, "attention_mask": encoded["attention_mask"],
                "mm_token_type_ids": mm_token_type_ids(ids, self.image_token_ids), **video}
