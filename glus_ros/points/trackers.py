"""A point-prompted video tracker: what Molmo2's points become masks with, whichever tracker does it.

Why an interface: a pointing backend's points can seed SAM 2 (the project's head, an official ``.pt``), SAM 3's
tracker or EdgeTAM (transformers' classes, from a local folder). The live engine (``streaming/pointing.py``) and
the offline propagation (``points/propagation.py``) use only this, so each tracker keeps the same semantics: a
point seeds the frame it was made on (each point its own positive prompt, the mask their union, written to memory
as "object present"), and memory alone carries the object to every later frame.

- ``PointTracker.encode`` / ``video_frames``: a frame's features, made once and shared by every track;
- ``PointTracker.new_track``: one target's tracker state (its memory);
- ``PointTrack.seed``: points on one frame -> the anchor's prediction, the memory started from it;
- ``PointTrack.step``: the next frame from memory (memory written);
- ``PointTrack.fork``: a fresh track holding only the seed (each offline pass starts from the anchor alone).

Predictions are ``MaskPrediction``: low-resolution logits, logits at ``image_size`` (the low-resolution map
resized as SAM 2 resizes it) and the object-score logit, so the mask rules downstream are the same for all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from glus_ros.model.sam2_head import MaskPrediction
from glus_ros.points.coords import Point


class VideoFrames(Protocol):
    """Features of a whole video's frames, made on demand (``keep_only`` forgets the rest)."""

    def features(self, index: int) -> Any: ...

    def keep_only(self, keep: set[int]) -> None: ...


class PointTrack(ABC):
    """One target's tracker state (module doc)."""

    @abstractmethod
    def seed(self, frame: Any, points: Sequence[Point], height: int, width: int) -> MaskPrediction:
        """Pixel ``points`` of an HxW frame -> the anchor prediction (object score: present); starts the memory."""

    @abstractmethod
    def step(self, frame: Any) -> MaskPrediction:
        """The next frame from memory; its memory is written."""

    @abstractmethod
    def fork(self) -> PointTrack:
        """A new track holding this one's seed only."""

    @abstractmethod
    def __len__(self) -> int:
        """Memory entries held (the engine's statistics)."""


class PointTracker(ABC):
    """A point-prompted video tracker (module doc)."""

    name: str
    model: Any                # the network (moved and put in eval mode with the tracker)
    has_memory: bool = True   # point propagation needs memory (a GLUS model may run without)

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def image_size(self) -> int:
        """The square size ``MaskPrediction.logits`` come at."""

    @abstractmethod
    def encode(self, image: np.ndarray) -> Any:
        """One RGB uint8 frame of a stream -> its features."""

    @abstractmethod
    def video_frames(self, frames: Sequence[np.ndarray]) -> VideoFrames:
        """Features of a video's frames, encoded when first read."""

    @abstractmethod
    def new_track(self) -> PointTrack: ...

    def new_memory_bank(self) -> PointTrack:
        """The streaming engine's name for a target's tracker state."""
        return self.new_track()

    def to(self, device: str | torch.device) -> PointTracker:
        """Move the weights (the ROS node's off switch moves them to the CPU)."""
        self.model.to(device)
        return self

    def eval(self) -> PointTracker:
        self.model.eval()
        return self
