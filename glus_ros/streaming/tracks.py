"""What the engine keeps per target (its track: prompt, memory bank, state) and what one MLLM pass reads (a window
snapshot) and produces (a grounding); the checks a target's spec gets whatever the image size.

Plain data shared by the engine's parts (``engine.py``, ``mllm.py``, ``live_worker.py``) and the engines built on it
(``pointing.py``, ``concept.py``); mutated only by the thread that holds the engine's model lock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.region import Region
from glus_ros.model.task_adapter import COUNTING, task_of
from glus_ros.streaming.types import TargetSpec, phrase_target_id


class UnknownTargetError(KeyError):
    """A target id the engine does not track (a KeyError whose message reads well)."""

    def __init__(self, target_id: str, known: Sequence[str]) -> None:
        self.target_id = target_id
        self.known = list(known)
        super().__init__(f"unknown target '{target_id}' (known: {', '.join(self.known) or 'none'})")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(eq=False)
class PhraseTrack:
    """Tracking state of a question target's grounded phrase k >= 1 (phrase 0 lives in the target itself)."""

    bank: MemoryBank | None
    prompt: torch.Tensor | None = None   # (1, prompt_dim) the phrase's [SEG] projection from the last grounding
    score: float = 1.0
    state: str = "grounding"


@dataclass(eq=False)
class TargetTrack:
    """A target's tracking state; mutated only by the thread that holds the model lock."""

    spec: TargetSpec
    bank: MemoryBank | None
    prompt: torch.Tensor | None = None   # (1, prompt_dim) [SEG] projection from the last grounding
    state: str = "grounding"
    score: float = 1.0
    since_ground: int = 0                # frames decoded since the last grounding
    needs_ground: bool = True
    # region targets: (1, hidden) embedding of the region on the newest frame at the first grounding (then kept)
    region_embed: torch.Tensor | None = None
    # question targets: the answer generated on the first grounding (None: not yet), kept across re-groundings
    answer_ids: list[int] | None = None
    seg_slots: list[int] = field(default_factory=list)  # the answer's [SEG] of each grounded phrase, in order
    answer: str = ""
    phrases: list[tuple[str, int, int]] = field(default_factory=list)
    more: list[PhraseTrack] = field(default_factory=list)   # phrases 1.. (own prompt and memory bank each)
    grounded_step: int | None = None     # engine step of the frame the current prompt was computed on
    grounded_seq: int | None = None      # that frame's seq
    # live: a finished grounding waiting for the tracker's next frame, and whether one is being computed
    # (both guarded by the engine's target lock)
    pending: Grounding | None = None
    in_flight: bool = False

    def phrase_ids(self) -> list[str]:
        """The output id each grounded phrase is tracked under (empty for other targets)."""
        return [phrase_target_id(self.spec.target_id, k) for k in range(len(self.phrases))]

    @property
    def kind(self) -> str:
        """Which MLLM path grounds it: "region", "question" or "expression"."""
        if self.spec.region is not None:
            return "region"
        return "question" if is_question(self.spec.expression) else "expression"


@dataclass(eq=False)
class Window:
    """What one MLLM pass reads, taken from the history at its newest frame (a snapshot: the history goes on)."""

    step: int                            # engine step of the newest frame
    seq: int
    epoch: int                           # the engine's reset count when taken
    context: list[int]                   # context frame steps
    query: list[int]                     # query window steps, oldest first (may be shorter than num_query)
    inputs: dict[int, torch.Tensor]      # step -> CLIP-sized pixels of every frame above
    image: np.ndarray                    # the newest frame (region targets' first grounding)


@dataclass(eq=False)
class Grounding:
    """The result of one target's MLLM pass on a window, applied by the tracker (inline: at once)."""

    step: int
    seq: int
    epoch: int
    prompt: torch.Tensor | None = None   # (1, prompt_dim) for the target (phrase 0)
    grid: torch.Tensor | None = None     # (1, G, G) grounding map of the window's newest frame
    points: list[tuple[float, float]] | None = None  # point head, normalised (0..1) on the newest frame
    region_embed: torch.Tensor | None = None
    phrase_prompts: list[torch.Tensor] = field(default_factory=list)  # phrases 1..
    # a question's first grounding: (token ids, text, phrases, seg slots)
    answer: tuple[list[int], str, list[tuple[str, int, int]], list[int]] | None = None
    error: Exception | None = None       # the target cannot be grounded (a region that does not fit): drop it
    # the released weights' conversation answered something other than [SEG] for the newest frame: no new prompt
    # (full schedule: as the official step, an empty mask and no memory for that frame)
    no_seg: bool = False


def is_question(expression: str) -> bool:
    """A question gets a grounded answer; anything else is a referring expression. A counting question
    ("how many ...?") is answered by its points, so it takes the referring path (and, in a model that has
    one, the counting adapter: glus_ros/model/task_adapter.py)."""
    return expression.rstrip().endswith("?") and task_of(expression) != COUNTING


def check_region_shape(region: Region) -> None:
    """What can be wrong with a region whatever the image size (ValueError); the bounds need the image."""
    where = f"region {region.describe()}"
    if region.kind not in ("box", "point"):
        raise ValueError(f"region kind must be 'box' or 'point', got {region.kind!r}")
    try:
        coords = [float(v) for v in (region.x0, region.y0, region.x1, region.y1)]
    except (TypeError, ValueError):
        coords = [float("nan")]
    if not all(math.isfinite(v) for v in coords):
        raise ValueError(f"{where}: coordinates must be finite numbers")
    if region.kind == "box":
        if region.x1 < region.x0 or region.y1 < region.y0:
            raise ValueError(f"{where}: x1 < x0 or y1 < y0 (give the top-left corner first)")
        if region.x1 == region.x0 or region.y1 == region.y0:
            raise ValueError(f"{where}: the box has zero area")
    if region.x0 < 0 or region.y0 < 0:
        raise ValueError(f"{where}: outside the image (negative coordinates)")
