"""Plain data passed in and out of the streaming engine, so the ROS layer and tests share one vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glus_ros.geometry import CameraIntrinsics
from glus_ros.model.region import Region

MODES = ("mask", "point", "both")
STATES = ("grounding", "tracking", "lost")


PHRASE_ID_MARK = "/phrase_"  # user target ids may not contain it


def phrase_target_id(target_id: str, k: int) -> str:
    """The output id of a question target's k-th grounded phrase: the target's own id for k = 0, else
    ``<target_id>/phrase_<k>``."""
    return target_id if k == 0 else f"{target_id}{PHRASE_ID_MARK}{k}"


@dataclass
class StreamFrame:
    image: np.ndarray                          # (H, W, 3) uint8 RGB
    stamp: float                               # seconds; the ROS node maps header.stamp <-> float
    frame_id: str = ""
    depth: np.ndarray | None = None            # (H, W) float metres, 0 or nan = invalid; same size as image
    intrinsics: CameraIntrinsics | None = None
    seq: int = 0                               # set by the engine on submit (monotonic)


@dataclass(frozen=True)
class TargetSpec:
    """What to track. With a ``region`` the target is "track <region>" (the expression is then only a label and
    may be empty); an expression ending in "?" is a question that gets a grounded answer (see the engine)."""

    target_id: str
    expression: str
    mode: str = "mask"                         # one of MODES: what the caller wants published
    # box or point in pixels of the frame that is current when the target is added (``frame`` is not used)
    region: Region | None = None


@dataclass
class TargetOutput:
    target_id: str
    expression: str
    mask: np.ndarray                           # (H, W) bool at input size (all False when lost)
    bbox: tuple[int, int, int, int] | None     # x_min, y_min, x_max, y_max inclusive pixels; None when lost
    point_2d: tuple[float, float] | None       # interior point (x, y) in pixels; None when lost
    point_3d: tuple[float, float, float] | None  # camera optical frame, metres (needs depth + intrinsics)
    score: float                               # [0, 1] probability that the target is visible
    state: str                                 # "grounding" | "tracking" | "lost"
    mode: str
    # every referred object's point (x, y) in pixels: the model's point head on grounding frames when it has
    # one (VideoMolmo pointing, any number of objects), else one interior point per connected component of the
    # mask, largest first (geometry.component_points)
    points: list[tuple[float, float]] = field(default_factory=list)
    # question targets: the grounded answer (generated once) and its grounded phrases (text, start, end) with
    # ``answer[start:end] == text``, in the order of their [SEG] tokens. Every phrase is tracked with its own
    # mask and gives its own TargetOutput: phrase 0 under the question target's id, phrase k >= 1 under
    # ``phrase_target_id(target_id, k)``; all of them carry the same answer, phrases and phrase_target_ids
    answer: str = ""
    phrases: list[tuple[str, int, int]] = field(default_factory=list)
    # the output id each phrase is tracked under (same length as ``phrases``; empty for other targets)
    phrase_target_ids: list[str] = field(default_factory=list)
    # seq of the frame whose window the MLLM computed the prompt in use on (None: no grounding yet, the target
    # waits for its first one: state "grounding", empty mask), and how many frames before this one that was
    # (0: grounded on this very frame, as in the inline schedules)
    grounded_seq: int | None = None
    grounding_age: int | None = None


@dataclass
class FrameResult:
    stamp: float
    frame_id: str
    seq: int
    width: int
    height: int
    targets: list[TargetOutput]
    latency_ms: float                          # wall time from submit() (or process()) of this frame to the result
    frames_dropped: int                        # frames dropped since the previous result
    image: np.ndarray                          # the input image (for overlays)
