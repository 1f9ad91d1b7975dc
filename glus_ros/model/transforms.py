"""Frame preprocessing for the two encoders (done here: torchvision is not usable on CPU installs)."""

from __future__ import annotations

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
