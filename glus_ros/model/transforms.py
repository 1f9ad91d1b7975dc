"""Frame preprocessing for the two encoders (done here: torchvision is not usable on CPU installs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # SAM 2
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_frame(frame: np.ndarray, where: str = "frame") -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"{where}: expected an HxWx3 RGB image, got shape {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 pixels, got {frame.dtype}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(f"{where}: image of size {frame.shape[1]}x{frame.shape[0]} is too small")
    return frame


def check_video_size(frames) -> tuple[int, int]:
    """(height, width) of a non-empty video of HxWx3 uint8 frames of one size; a clear error otherwise."""
    if len(frames) == 0:
        raise ValueError("the video has no frames")
    height, width = check_frame(frames[0], "frame 0").shape[:2]
    for i, f in enumerate(frames):
        if check_frame(f, f"frame {i}").shape[:2] != (height, width):
            raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {width}x{height}")
    return height, width


def to_tensor(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 frames (same size) -> (N, 3, H, W) float in [0, 1]."""
    arr = np.stack([check_frame(f, f"frame {i}") for i, f in enumerate(frames)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def resize_normalise(images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size), normalised (square resize, as SAM 2 does)."""
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    return (out - m) / s


def sam_input(images: torch.Tensor, size: int) -> torch.Tensor:
    return resize_normalise(images, size, IMAGENET_MEAN, IMAGENET_STD)


def clip_input(images: torch.Tensor, size: int) -> torch.Tensor:
    return resize_normalise(images, size, CLIP_MEAN, CLIP_STD)


def logits_to_frame(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, S, S) mask logits at SAM size -> (N, H, W) logits at the frame's own size."""
    return F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def resize_uint8(frame: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 frame -> (1, 3, size, size) uint8, antialiased bilinear (torch's uint8 kernel).

    The live engine's preprocessing: resizing the camera frame while it is still 8-bit is an order of
    magnitude faster than converting it to float first (:func:`to_tensor` + :func:`resize_normalise`) and
    differs from that path by less than one grey level.
    """
    check_frame(frame)
    if not frame.flags.writeable:  # e.g. a ROS message's buffer; torch only reads it, but warns on read-only arrays
        frame = frame.copy()
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalise_uint8(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> float, normalised like :func:`resize_normalise`."""
    out = pixels.float().div_(255.0)
    m = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
    return (out - m) / s


@dataclass(frozen=True)
class ClipProcessorSpec:
    """What ``CLIPImageProcessor`` (preprocessor_config.json of a CLIP folder) does to a frame."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = 3          # PIL bicubic

    @classmethod
    def from_folder(cls, folder: Path) -> ClipProcessorSpec:
        """The spec of ``folder/preprocessor_config.json`` (defaults: openai/clip-vit-large-patch14's values)."""
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        size, crop = raw.get("size", 224), raw.get("crop_size", 224)
        edge = size.get("shortest_edge") if isinstance(size, dict) else size
        crop_h, crop_w = (crop.get("height"), crop.get("width")) if isinstance(crop, dict) else (crop, crop)
        if not all(isinstance(v, int) and v > 0 for v in (edge, crop_h, crop_w)):
            raise ValueError(f"{path}: expected size.shortest_edge and crop_size height/width as positive integers")
        for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
            if raw.get(flag, True) is not True:
                raise ValueError(f"{path}: {flag} is off; the GLUS vision tower input needs every step")
        return cls(edge, crop_h, crop_w, tuple(raw.get("image_mean", CLIP_MEAN)), tuple(raw.get("image_std", CLIP_STD)),
                   float(raw.get("rescale_factor", 1 / 255)), int(raw.get("resample", 3)))


def clip_processor_input(frame: np.ndarray, spec: ClipProcessorSpec) -> torch.Tensor:
    """One HxWx3 uint8 frame -> (3, crop_h, crop_w), as CLIPImageProcessor makes it (transformers 4.31).

    The short side is resized to ``shortest_edge`` with PIL bicubic on the uint8 image (the long side to
    ``int(edge * long / short)``), the centre is cropped, then x * rescale_factor
    in float64 -> float32 and (x - mean) / std in float32.
    """
    from PIL import Image

    check_frame(frame)
    height, width = frame.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
    resized = np.array(Image.fromarray(frame).resize((new_w, new_h), resample=spec.resample))
    top, left = (new_h - spec.crop_height) // 2, (new_w - spec.crop_width) // 2
    if top < 0 or left < 0:
        raise ValueError(f"CLIP crop {spec.crop_width}x{spec.crop_height} is larger than the frame resized to "
                         f"{new_w}x{new_h} (shortest_edge {spec.shortest_edge}); GLUS's processor never pads")
    crop = resized[top:top + spec.crop_height, left:left + spec.crop_width]
    scaled = (crop * spec.rescale_factor).astype(np.float32)
    normed = (scaled - np.array(spec.mean, dtype=np.float32)) / np.array(spec.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(normed.transpose(2, 0, 1)))
