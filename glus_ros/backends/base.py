"""What a grounding backend is: a language model that answers a referring request on a window of frames.

The SAM 2 tracker, the point propagation, counting and the metrics do not care which model grounded a
target; they read a ``TargetGrounding``: per frame of the window either SAM 2 prompts ([SEG] embeddings,
GLUS) or points (Molmo2), plus the raw answer and the count. A backend is chosen by the model config
(``glus_ros.backends.loading``) and carries the SAM 2 tracker its answers are decoded with.

One call, ``ground(window, expressions, context=(), timestamps=None)``, serves both the offline video
path (the window is the frames sampled from the whole clip) and a streaming engine (the window is the
newest frames, re-grounded now and then): the result names frames by their index in ``window``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from glus_ros.model.prompting import clean_expression
from glus_ros.points.coords import Point

if TYPE_CHECKING:
    from glus_ros.model.memory_bank import MemoryBank
    from glus_ros.model.sam2_head import FrameFeatures, SAM2Head

BackendName = Literal["glus", "molmo2", "sam3"]
# "instances": every instance of a concept, found by its own detector and tracked apart (SAM 3)
Answers = Literal["prompts", "points", "instances"]


@dataclass
class FrameGrounding:
    """A backend's answer for one target on one frame of the window.

    ``points``: normalised (x, y) points, one per referred object ([]: the model says it is not there);
    ``prompt`` (prompt_dim,): a SAM 2 sparse prompt ([SEG]); ``grid`` (G, G): grounding-map logits given
    to SAM 2 as its mask prompt; ``score``: the backend's confidence that the target is on this frame.
    """

    points: list[Point] | None = None
    prompt: torch.Tensor | None = None
    grid: torch.Tensor | None = None
    score: float = 1.0


@dataclass
class TargetGrounding:
    """A backend's answer for one expression on a window: the frames it answered for (window indices)."""

    expression: str
    frames: dict[int, FrameGrounding] = field(default_factory=dict)
    text: str | None = None          # the model's answer as written (pointing backends)
    count: int | None = None         # the number of objects the answer names (pointing backends)
    malformed: bool = False          # the answer could not be read (nothing usable in it): target lost

    def points_by_frame(self) -> dict[int, list[Point]]:
        return {t: list(g.points) for t, g in self.frames.items() if g.points is not None}


class SamTracking(ABC):
    """What the backend-agnostic SAM 2 code reads from a model (GLUSModel and SAM2Tracker both have it)."""

    sam: SAM2Head
    device: torch.device

    @abstractmethod
    def encode_sam_frames(self, sam_pixels: torch.Tensor) -> FrameFeatures: ...

    @abstractmethod
    def new_memory_bank(self) -> MemoryBank | None: ...


class GroundingBackend(ABC):
    """A referring model behind the tracker; see the module doc."""

    name: ClassVar[BackendName]
    answers: ClassVar[Answers]   # "prompts": SAM 2 prompts per frame; "points": points per frame
    # frames shown closer together than this cannot be told apart in the backend's answer (0: any spacing)
    min_frame_gap_s: ClassVar[float] = 0.0

    def clean(self, expression: str) -> str:
        """The expression as this backend is asked it (ValueError: empty, too long, reserved tokens)."""
        return clean_expression(expression)

    @property
    @abstractmethod
    def tracker(self):
        """The model the SAM 2 code runs on: ``sam``, ``cfg.memory``, ``device``, ``encode_sam_frames``,
        ``new_memory_bank`` (``GLUSModel`` itself, or a ``SAM2Tracker``); a pointing backend may instead carry
        another ``points.trackers.PointTracker`` (SAM 3's tracker, EdgeTAM)."""

    @property
    def device(self) -> torch.device:
        return self.tracker.device

    def sample_video(self, num_frames: int, fps: float) -> list[int]:
        """The frames of a ``num_frames`` clip at ``fps`` to show when grounding the whole clip (all, unless the
        backend has its own rule)."""
        return list(range(num_frames))

    @abstractmethod
    def ground(self, window: Sequence[np.ndarray], expressions: Sequence[str],
               context: Sequence[np.ndarray] = (), timestamps: Sequence[float] | None = None,
               ) -> list[TargetGrounding]:
        """Answer each expression on ``window`` (RGB uint8 frames, oldest first, all one size).

        ``context``: older frames the model may read for the whole-video picture (GLUS context frames);
        ``timestamps``: seconds of the window's frames (a pointing model is told when each frame was).
        Returns one ``TargetGrounding`` per expression, frames named by their index in ``window``.
        Malformed model output never raises: it gives a grounding with no frames and ``malformed`` set.
        """
