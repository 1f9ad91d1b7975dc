"""SAM 2 as a point tracker: the project's SAM 2 head (a ``SAM2Tracker`` or a GLUS model's) behind ``PointTracker``.

The computation is the one the pointing engine and the offline propagation always made (``decode_point_anchor``
on the anchor, ``SAM2Head.step`` with the target's ``MemoryBank`` after it); this module only gives it the
interface the other trackers share (``points/trackers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from glus_ros.core.frames import FrameEncoder
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.sam2_head import FrameFeatures, MaskPrediction, SAM2Head
from glus_ros.model.transforms import IMAGENET_MEAN, IMAGENET_STD, normalise_uint8, resize_uint8
from glus_ros.points.coords import Point, frame_to_sam
from glus_ros.points.trackers import PointTrack, PointTracker


@dataclass
class PointAnchor:
    """SAM 2's answer to points on one frame: the union of the per-point masks and its memory."""

    low_res_logits: torch.Tensor                 # (1, 1, h, w)
    logits: torch.Tensor                         # (1, 1, S, S) at SAM 2's input size
    memory: tuple[torch.Tensor, torch.Tensor]    # (features, position encoding) for a memory bank


def decode_point_anchor(sam: SAM2Head, frame: FrameFeatures, points: Sequence[Point], height: int, width: int,
                        ) -> PointAnchor:
    """Pixel ``points`` of an HxW frame (features ``frame``, batch 1) -> its anchor mask and memory.

    Each point is its own single positive prompt and the mask is their union (two points on two objects must
    not merge into one ambiguous prompt); the memory is encoded from the binarised mask as "object present",
    as SAM 2 encodes a prompted frame.
    """
    n = len(points)
    if n == 0:
        raise ValueError("an anchor needs at least one point")
    device = frame.vision_feats[0].device
    coords = torch.tensor(frame_to_sam(points, height, width, sam.image_size), dtype=torch.float32,
                          device=device).view(n, 1, 2)
    labels = torch.ones(n, 1, dtype=torch.int32, device=device)
    per_point = frame.select(torch.zeros(n, dtype=torch.long, device=device))
    pred = sam.decode(sam.condition_on_memory(per_point, None), per_point, None, coords, labels)
    low_res = pred.low_res_logits.amax(dim=0, keepdim=True)
    logits = pred.logits.amax(dim=0, keepdim=True)
    present = torch.ones_like(pred.object_score[:1])  # the points say the object is there
    feats, pos = sam.sam._encode_new_memory(
        current_vision_feats=frame.vision_feats, feat_sizes=frame.feat_sizes, pred_masks_high_res=logits,
        object_score_logits=present, is_mask_from_pts=True,
    )
    return PointAnchor(low_res, logits, (feats, pos[-1]))


class _Sam2Frames(FrameEncoder):
    """A video's SAM 2 features (``FrameEncoder``'s float resize, as offline segmentation makes them)."""

    def features(self, index: int) -> FrameFeatures:
        return self.sam_features(index)


class Sam2Track(PointTrack):
    """A target's SAM 2 memory bank, seeded by ``decode_point_anchor``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.bank: MemoryBank = model.new_memory_bank()
        self._seed: tuple[torch.Tensor, torch.Tensor] | None = None

    def seed(self, frame: FrameFeatures, points: Sequence[Point], height: int, width: int) -> MaskPrediction:
        anchor = decode_point_anchor(self.model.sam, frame, points, height, width)
        self.bank.add(*anchor.memory)
        self._seed = anchor.memory
        present = torch.ones(1, 1, device=anchor.logits.device)
        return MaskPrediction(anchor.low_res_logits, anchor.logits, present, present)

    def step(self, frame: FrameFeatures) -> MaskPrediction:
        return self.model.sam.step(frame, self.bank, None)

    def fork(self) -> Sam2Track:
        if self._seed is None:
            raise ValueError("fork needs a seeded track")
        track = Sam2Track(self.model)
        track.bank.add(*self._seed)
        track._seed = self._seed
        return track

    def __len__(self) -> int:
        return len(self.bank)


class Sam2PointTracker(PointTracker):
    """The SAM 2 head of a ``SAM2Tracker`` (Molmo2 with ``--sam2-checkpoint``) or of a GLUS model."""

    name = "sam2"

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def has_memory(self) -> bool:  # type: ignore[override]
        return bool(self.model.cfg.memory.enabled)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def image_size(self) -> int:
        return int(self.model.sam.image_size)

    def encode(self, image: np.ndarray) -> FrameFeatures:
        """The stream's fast path: the 8-bit square resize, ImageNet-normalised."""
        small = resize_uint8(image, self.image_size).to(self.device)
        return self.model.encode_sam_frames(normalise_uint8(small, IMAGENET_MEAN, IMAGENET_STD))

    def video_frames(self, frames: Sequence[np.ndarray]) -> _Sam2Frames:
        return _Sam2Frames(self.model, frames)

    def new_track(self) -> Sam2Track:
        return Sam2Track(self.model)


def as_point_tracker(model: Any) -> PointTracker:
    """``model`` itself when it is a point tracker, else its SAM 2 (a ``SAM2Tracker`` or a GLUS model)."""
    return model if isinstance(model, PointTracker) else Sam2PointTracker(model)
