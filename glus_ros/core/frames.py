"""Per-frame encoder inputs and outputs of one video or stream, made once per frame and shared by every window.

One place for the preprocessing every job must agree on: the vision tower's input follows ``vlm.clip_preprocess``
(``square``: a square resize; ``shortest_edge_crop``: CLIPImageProcessor's short-side resize and centre crop, the
released weights' input), SAM 2's input is the square ImageNet-normalised resize. Offline segmentation, the
streaming engine and the grounding backend all get their frames' tokens and features from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from glus_ros.model.glus import GLUSModel
from glus_ros.model.sam2_head import FrameFeatures
from glus_ros.model.transforms import ClipProcessorSpec, clip_input, clip_processor_input, sam_input, to_tensor


def clip_spec_of(model: GLUSModel) -> ClipProcessorSpec:
    """The CLIPImageProcessor settings of the model's vision tower folder (or the config's image size)."""
    spec = getattr(model, "_clip_spec", None)
    if spec is None:
        folder = model.cfg.vlm.vision_tower
        size = model.cfg.vlm.image_size
        spec = ClipProcessorSpec.from_folder(Path(folder)) if folder else ClipProcessorSpec(size, size, size)
        if (spec.crop_height, spec.crop_width) != (size, size):
            raise ValueError(f"the CLIP folder {folder} crops {spec.crop_width}x{spec.crop_height}, the model "
                             f"config has vlm.image_size {size}")
        model._clip_spec = spec  # read once per model (a file read)
    return spec


def clip_pixels(model: GLUSModel, frames: Sequence[np.ndarray]) -> torch.Tensor:
    """(N, 3, S, S) vision tower input of HxWx3 uint8 frames, on the model's device, as ``vlm.clip_preprocess``
    says: ``square`` resizes on the device (float), ``shortest_edge_crop`` is CLIPImageProcessor's own recipe."""
    if model.cfg.vlm.clip_preprocess == "shortest_edge_crop":
        spec = clip_spec_of(model)
        return torch.stack([clip_processor_input(f, spec) for f in frames]).to(model.device)
    return clip_input(to_tensor(list(frames)).to(model.device), model.cfg.vlm.image_size)


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def encode_sam(model: GLUSModel, pixels: torch.Tensor) -> FrameFeatures:
    """SAM 2 features of (N, 3, H, W) [0, 1] frames already on the device.

    With low-precision weights (the release in bf16) every level and its position encoding is cast to the weights'
    dtype, as the official code does (SAM 2's float32 FPN upsampling would otherwise promote bf16 levels).
    """
    sam = model.sam
    dtype = _dtype(sam)
    out = model.encode_sam_frames(sam_input(pixels, sam.image_size).to(dtype))
    if dtype == torch.float32:
        return out
    return FrameFeatures([f.to(dtype) for f in out.vision_feats], [p.to(dtype) for p in out.vision_pos],
                         out.feat_sizes)


class FrameEncoder:
    """Visual tokens (the MLLM's input per frame) and SAM 2 features of the frames of one video or stream.

    ``frames`` maps a frame id to its HxWx3 uint8 image (a list for a video, a dict for a stream's history).
    ``one_by_one``: encode each frame in its own vision-tower pass (the official loop's order) instead of batching
    the frames a window is missing.
    """

    def __init__(self, model: GLUSModel, frames: Sequence[np.ndarray] | Mapping[int, np.ndarray],
                 one_by_one: bool = False) -> None:
        self.model = model
        self.frames = frames
        self.one_by_one = one_by_one
        self.tokens: dict[int, torch.Tensor] = {}
        self.sam: dict[int, FrameFeatures] = {}
        self.encoded: list[int] = []  # frames in the order their tokens were made (parity traces)

    def frame_tokens(self, indices: Sequence[int]) -> torch.Tensor:
        """(N, T, hidden) visual tokens of frames ``indices`` (repeats allowed), each frame encoded once."""
        missing = [i for i in dict.fromkeys(indices) if i not in self.tokens]
        groups = [[i] for i in missing] if self.one_by_one else ([missing] if missing else [])
        tower = self.model.vlm.vision_tower
        for group in groups:
            pixels = clip_pixels(self.model, [self.frames[i] for i in group]).to(_dtype(tower))
            for i, tokens in zip(group, self.model.encode_clip_frames(pixels), strict=True):
                self.tokens[i] = tokens
                self.encoded.append(i)
        return torch.stack([self.tokens[i] for i in indices])

    def context_pixels(self, indices: Sequence[int]) -> torch.Tensor:
        """(1, N, 3, S, S) the frames as the vision tower's input (what a motion field reads)."""
        return clip_pixels(self.model, [self.frames[i] for i in indices])[None]

    def sam_features(self, idx: int) -> FrameFeatures:
        if idx not in self.sam:
            pixels = to_tensor([self.frames[idx]]).to(self.model.device)
            self.sam[idx] = encode_sam(self.model, pixels)
        return self.sam[idx]

    def keep_only(self, keep: set[int]) -> None:
        """Forget the frames no later window needs."""
        for store in (self.tokens, self.sam):
            for i in [i for i in store if i not in keep]:
                del store[i]
