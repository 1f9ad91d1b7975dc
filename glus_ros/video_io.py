"""Reading videos (a file or a folder of frames) and writing masks and overlay videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def list_frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no image frames ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def read_image(path: Path) -> np.ndarray:
    """An RGB uint8 image; unreadable files are an error naming the file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read this image (missing, corrupt or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[list[np.ndarray], list[str], float]:
    """Frames (RGB uint8), frame names (for output files) and fps of a video file or a frame folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video {path} does not exist")
    if path.is_dir():
        files = list_frame_files(path)[:max_frames]
        frames = [read_image(f) for f in files]
        size = frames[0].shape[:2]
        for f, frame in zip(files, frames, strict=True):
            if frame.shape[:2] != size:
                raise ValueError(f"{f}: frame is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"the first frame is {size[1]}x{size[0]}")
        return frames, [f.stem for f in files], 10.0
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open this video (unsupported codec or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames: list[np.ndarray] = []
    while max_frames is None or len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise ValueError(f"{path}: no frames could be decoded from this video")
    return frames, [f"{i:05d}" for i in range(len(frames))], float(fps)


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """A 0/255 single-channel PNG at the mask's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
        raise OSError(f"cannot write {path}")


def read_mask_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: cannot read this mask image")
    return img > 127


def overlay(frame: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 64, 32),
            alpha: float = 0.5) -> np.ndarray:
    """The frame with the mask tinted and outlined (RGB uint8)."""
    out = frame.copy()
    m = mask.astype(bool)
    tint = np.array(colour, dtype=np.float32)
    out[m] = (out[m].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    """An mp4 (mp4v) of RGB frames; falls back to MJPG/avi where mp4 writing is unavailable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    for fourcc, target in (("mp4v", path), ("MJPG", path.with_suffix(".avi"))):
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if writer.isOpened():
            for f in frames:
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            writer.release()
            return target
    raise OSError(f"cannot write a video to {path} (no working codec)")
