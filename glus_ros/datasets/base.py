"""What the referring-video dataset readers share: the ``Expression`` record, file helpers, frame access."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError


@dataclass(frozen=True)
class Expression:
    """One referring expression of a video: what the model reads and what the score compares against."""

    video: str
    exp_id: str
    text: str
    obj_ids: tuple[int, ...]
    # MeViS annotation ids (keys of mask_dict.json); None where the dataset does not list them
    anno_ids: tuple[str, ...] | None = None


def read_json(path: Path) -> Any:
    """Load a JSON file; a missing or malformed file is an error that names it."""
    if not path.is_file():
        raise FileNotFoundError(f"missing JSON file: {path}")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt JSON file {path}: {exc}") from exc


def open_image(path: Path) -> Image.Image:
    """Open an image lazily (header only); missing or unreadable files are errors that name it."""
    if not path.is_file():
        raise FileNotFoundError(f"missing image: {path}")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"unreadable image {path}: {exc}") from exc


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array."""
    image = open_image(path)
    try:
        with image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as exc:  # truncated files fail only when the pixels are decoded
        raise ValueError(f"unreadable image {path}: {exc}") from exc


def _obj_ids(raw: Any, where: str) -> tuple[int, ...]:
    """obj_id may be one id or a list, as int or numeric string (MeViS: list, Ref-YouTube-VOS: str)."""
    items = raw if isinstance(raw, list) else [raw]
    try:
        return tuple(int(x) for x in items)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: obj_id must be integer ids, got {raw!r}") from exc


def parse_meta_expressions(meta: Any, path: Path) -> tuple[dict[str, list[str]], list[Expression]]:
    """Frames per video and all expressions from a ``meta_expressions.json`` (MeViS or Ref-YouTube-VOS)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise ValueError(f"{path}: expected an object with a 'videos' mapping")
    frames: dict[str, list[str]] = {}
    expressions: list[Expression] = []
    for video, entry in meta["videos"].items():
        where = f"{path}: video {video!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        for key in ("frames", "expressions"):
            if key not in entry:
                raise ValueError(f"{where}: missing key '{key}'")
        if not isinstance(entry["frames"], list) or not entry["frames"]:
            raise ValueError(f"{where}: 'frames' must be a non-empty list")
        frames[video] = [str(f) for f in entry["frames"]]
        if not isinstance(entry["expressions"], dict):
            raise ValueError(f"{where}: 'expressions' must be a mapping")
        for exp_id, exp in entry["expressions"].items():
            exp_where = f"{where} expression {exp_id!r}"
            if not isinstance(exp, dict) or "exp" not in exp:
                raise ValueError(f"{exp_where}: missing key 'exp'")
            anno = exp.get("anno_id")
            expressions.append(
                Expression(
                    video=video,
                    exp_id=str(exp_id),
                    text=str(exp["exp"]),
                    obj_ids=_obj_ids(exp.get("obj_id", []), exp_where),
                    anno_ids=None if anno is None else tuple(str(a) for a in anno),
                )
            )
    return frames, expressions


class FrameFolderDataset:
    """Frames under ``<split_dir>/JPEGImages/<video>/<frame>.jpg`` and parsed expressions.

    Subclasses set ``split_dir``, ``meta_path``, ``_frames``, ``_expressions`` and ``_sizes`` and add
    their own ground truth (``gt_masks``).
    """

    split_dir: Path
    meta_path: Path
    _frames: dict[str, list[str]]
    _expressions: list[Expression]
    _sizes: dict[str, tuple[int, int]]

    def videos(self) -> list[str]:
        return list(self._frames)

    def frames(self, video: str) -> list[str]:
        if video not in self._frames:
            raise ValueError(f"video {video!r} is not in {self.meta_path}")
        return list(self._frames[video])

    def frame_path(self, video: str, frame: str) -> Path:
        return self.split_dir / "JPEGImages" / video / f"{frame}.jpg"

    def load_frame(self, video: str, frame: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame."""
        return read_rgb(self.frame_path(video, frame))

    def frame_size(self, video: str) -> tuple[int, int]:
        """(H, W) of a video, read from its first frame's header once."""
        if video not in self._sizes:
            path = self.frame_path(video, self.frames(video)[0])
            with open_image(path) as image:
                self._sizes[video] = (image.height, image.width)
        return self._sizes[video]

    def expressions(self) -> list[Expression]:
        return list(self._expressions)
