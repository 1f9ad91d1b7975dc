"""Reader of the MeViS dataset layout .

Layout under ``<root>/<split>/``::

    JPEGImages/<video>/<frame>.jpg
    meta_expressions.json   videos -> <video> -> {frames: [...], expressions: {<exp_id>:
                            {exp, obj_id: [...], anno_id: [...]}}}
    mask_dict.json          <anno_id> -> [per-frame COCO RLE or null]   (absent on the public valid split)

The ground truth of an expression is the union of the masks of all its objects, as MeViS scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glus_ros.datasets.base import (  # noqa: F401  (re-exported: the readers' shared API)
    Expression,
    FrameFolderDataset,
    open_image,
    parse_meta_expressions,
    read_json,
    read_rgb,
)
from glus_ros.datasets.rle import decode_rle


class MevisDataset(FrameFolderDataset):
    """Frames, expressions and union-of-objects ground truth of one MeViS split."""

    name = "mevis"

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"MeViS split folder not found: {self.split_dir}")
        self.meta_path = self.split_dir / "meta_expressions.json"
        self.mask_dict_path = self.split_dir / "mask_dict.json"
        self._frames, self._expressions = parse_meta_expressions(read_json(self.meta_path), self.meta_path)
        self._mask_dict: dict[str, Any] | None = None  # loaded on first gt_masks (hundreds of MB on MeViS)
        self._sizes: dict[str, tuple[int, int]] = {}


    def has_ground_truth(self) -> bool:
        return self.mask_dict_path.is_file()

    def _masks(self) -> dict[str, Any]:
        if self._mask_dict is None:
            if not self.mask_dict_path.is_file():
                raise FileNotFoundError(
                    f"no ground truth for MeViS split {self.split!r}: {self.mask_dict_path} is missing "
                    "(the public valid split is scored on the challenge server; use valid_u locally)"
                )
            data = read_json(self.mask_dict_path)
            if not isinstance(data, dict):
                raise ValueError(f"{self.mask_dict_path}: expected an object mapping anno_id -> masks")
            self._mask_dict = data
        return self._mask_dict

    def gt_masks(self, expression: Expression) -> np.ndarray:
        """(T, H, W) bool: per frame, the union of the masks of all the expression's annotations."""
        return self.object_masks(expression).any(axis=0)

    def object_masks(self, expression: Expression) -> np.ndarray:
        """(A, T, H, W) bool: the mask of each of the expression's annotations on every frame (the official
        training sums them, the evaluation takes their union)."""
        masks = self._masks()
        if expression.anno_ids is None:
            raise ValueError(
                f"expression {expression.exp_id!r} of video {expression.video!r} lists no anno_id in "
                f"{self.meta_path}"
            )
        frames = self.frames(expression.video)
        height, width = self.frame_size(expression.video)
        out = np.zeros((len(expression.anno_ids), len(frames), height, width), dtype=bool)
        for a, anno_id in enumerate(expression.anno_ids):
            if anno_id not in masks:
                raise ValueError(
                    f"anno_id {anno_id!r} (video {expression.video!r}) not in {self.mask_dict_path}"
                )
            per_frame = masks[anno_id]
            if not isinstance(per_frame, list) or len(per_frame) != len(frames):
                got = len(per_frame) if isinstance(per_frame, list) else type(per_frame).__name__
                raise ValueError(
                    f"{self.mask_dict_path}: anno_id {anno_id!r} has {got} masks, "
                    f"video {expression.video!r} has {len(frames)} frames"
                )
            for t, rle in enumerate(per_frame):
                if rle is None:
                    continue
                mask = decode_rle(rle, (height, width))
                if mask.shape != (height, width):
                    raise ValueError(
                        f"{self.mask_dict_path}: anno_id {anno_id!r} frame {t} mask is "
                        f"{mask.shape[0]}x{mask.shape[1]}, frames of {expression.video!r} "
                        f"are {height}x{width}"
                    )
                out[a, t] = mask
        return out
