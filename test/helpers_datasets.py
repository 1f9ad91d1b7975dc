"""Write tiny MeViS / Ref-YouTube-VOS datasets and prediction folders on disk for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from glus_ros.datasets.rle import encode_mask


def write_jpeg(path: Path, size: tuple[int, int], color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """A flat-colour HxW JPEG frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = np.empty((size[0], size[1], 3), dtype=np.uint8)
    frame[:] = color
    Image.fromarray(frame).save(path, quality=95)
    return path


def write_frames(split_dir: Path, frames: dict[str, list[str]], sizes: dict[str, tuple[int, int]]) -> None:
    for video, names in frames.items():
        for name in names:
            write_jpeg(split_dir / "JPEGImages" / video / f"{name}.jpg", sizes[video])


def write_mevis(
    root: Path,
    split: str,
    frames: dict[str, list[str]],
    sizes: dict[str, tuple[int, int]],
    expressions: dict[str, dict[str, dict]],
    masks: dict[str, list[np.ndarray | None]] | None,
) -> Path:
    """MeViS layout: ``expressions[video][exp_id]`` is the raw meta entry; ``masks`` (anno_id -> per-frame
    mask or None) becomes mask_dict.json, which is left out when ``masks`` is None. Returns the split dir."""
    split_dir = root / split
    write_frames(split_dir, frames, sizes)
    meta = {"videos": {v: {"frames": frames[v], "expressions": expressions.get(v, {})} for v in frames}}
    (split_dir / "meta_expressions.json").write_text(json.dumps(meta))
    if masks is not None:
        mask_dict = {a: [None if m is None else encode_mask(m) for m in ms] for a, ms in masks.items()}
        (split_dir / "mask_dict.json").write_text(json.dumps(mask_dict))
    return split_dir


def write_palette_png(path: Path, labels: np.ndarray) -> Path:
    """A palette PNG whose pixel values are the object ids in ``labels``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette turns it into P
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * (256 * 3 - 12)
    image.putpalette(palette)
    image.save(path)
    return path


def write_refytvos(
    root: Path,
    split: str,
    frames: dict[str, list[str]],
    sizes: dict[str, tuple[int, int]],
    expressions: dict[str, dict[str, dict]],
    labels: dict[str, list[np.ndarray]] | None,
) -> Path:
    """Ref-YouTube-VOS layout: ``labels[video]`` are per-frame object-id maps written as palette PNGs."""
    split_dir = root / split
    write_frames(split_dir, frames, sizes)
    meta_dir = root / "meta_expressions" / split
    meta_dir.mkdir(parents=True, exist_ok=True)
    meta = {"videos": {v: {"frames": frames[v], "expressions": expressions.get(v, {})} for v in frames}}
    (meta_dir / "meta_expressions.json").write_text(json.dumps(meta))
    for video, maps in (labels or {}).items():
        for name, label in zip(frames[video], maps, strict=True):
            write_palette_png(split_dir / "Annotations" / video / f"{name}.png", label)
    return split_dir


def write_predictions(
    pred_dir: Path, video: str, exp_id: str, frames: list[str], masks: list[np.ndarray]
) -> None:
    """0/255 grayscale PNGs at ``<pred_dir>/<video>/<exp_id>/<frame>.png``."""
    out = pred_dir / video / exp_id
    out.mkdir(parents=True, exist_ok=True)
    for name, mask in zip(frames, masks, strict=True):
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{name}.png")
