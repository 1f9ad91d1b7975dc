"""COCO run-length encoding of binary masks, the format of MeViS ``mask_dict.json``."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def encode_mask(mask: np.ndarray) -> dict:
    """Encode an HxW boolean mask as a JSON-ready COCO RLE ``{"size": [h, w], "counts": str}``."""
    if mask.ndim != 2:
        raise ValueError(f"encode_mask expects an HxW mask, got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict | None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a COCO RLE to an HxW bool mask; ``None`` (object absent) gives zeros of ``shape``."""
    if rle is None:
        if shape is None:
            raise ValueError("decode_rle(None) needs the frame shape")
        return np.zeros(shape, dtype=bool)
    try:
        counts = rle["counts"]
        size = rle["size"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a COCO RLE (needs 'size' and 'counts'): {str(rle)[:80]}") from exc
    if isinstance(counts, list):  # uncompressed RLE
        rle = coco_mask.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
    else:
        rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(rle).astype(bool)
