"""Reader of the Ref-YouTube-VOS dataset layout, with the same API as ``MevisDataset``.

Layout under ``<root>/``::

    <split>/JPEGImages/<video>/<frame>.jpg
    <split>/Annotations/<video>/<frame>.png       palette PNG, pixel value = object id (0 = background)
    meta_expressions/<split>/meta_expressions.json videos -> <video> -> {frames, expressions:
                                                   {<exp_id>: {exp, obj_id}}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glus_ros.datasets.base import Expression, FrameFolderDataset, open_image, parse_meta_expressions, read_json


class RefYoutubeVosDataset(FrameFolderDataset):
    """Frames, expressions and per-object ground truth of one Ref-YouTube-VOS split."""

    name = "refytvos"

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"Ref-YouTube-VOS split folder not found: {self.split_dir}")
        self.meta_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        self._frames, self._expressions = parse_meta_expressions(read_json(self.meta_path), self.meta_path)
        self._sizes: dict[str, tuple[int, int]] = {}
        # the label maps of the last video read: expressions of one video come together
        self._labels_video: str | None = None
        self._labels: np.ndarray | None = None

    def annotation_path(self, video: str, frame: str) -> Path:
        return self.split_dir / "Annotations" / video / f"{frame}.png"

    def has_ground_truth(self) -> bool:
        return (self.split_dir / "Annotations").is_dir()

    def _read_labels(self, video: str) -> np.ndarray:
        """(T, H, W) palette indices of a video's annotation PNGs."""
        height, width = self.frame_size(video)
        frames = self.frames(video)
        labels = np.zeros((len(frames), height, width), dtype=np.int32)
        for t, frame in enumerate(frames):
            path = self.annotation_path(video, frame)
            with open_image(path) as image:
                if image.mode not in ("P", "L"):
                    raise ValueError(
                        f"annotation {path} has mode {image.mode}; expected a palette (P) or "
                        "grayscale (L) PNG whose values are object ids"
                    )
                try:
                    values = np.asarray(image)
                except OSError as exc:  # truncated files fail only when the pixels are decoded
                    raise ValueError(f"unreadable annotation {path}: {exc}") from exc
            if values.shape != (height, width):
                raise ValueError(
                    f"annotation {path} is {values.shape[0]}x{values.shape[1]}, "
                    f"frames of {video!r} are {height}x{width}"
                )
            labels[t] = values
        return labels

    def gt_masks(self, expression: Expression) -> np.ndarray:
        """(T, H, W) bool: per frame, the pixels whose palette index is one of the expression's obj_ids."""
        if not expression.obj_ids:
            raise ValueError(
                f"expression {expression.exp_id!r} of video {expression.video!r} "
                f"has no obj_id in {self.meta_path}"
            )
        if self._labels_video != expression.video:
            self._labels = self._read_labels(expression.video)
            self._labels_video = expression.video
        assert self._labels is not None
        return np.isin(self._labels, np.asarray(expression.obj_ids))
