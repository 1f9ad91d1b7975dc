"""Molmo2 as a grounding backend: transformers' own ``molmo2`` model answers with points, a point tracker makes masks.

The point tracker (``molmo2.tracker``): ``sam2``, SAM 2 from an official ``.pt`` (``--sam2-checkpoint``), or a
local folder of SAM 3's tracker or EdgeTAM (``backends/video_trackers.py``); each is a ``points.trackers``
``PointTracker``, so the engine and the offline propagation treat them alike.

A request is asked the way the Molmo2 model cards show (docs/backends.md has the sources):

- a referring expression: ``"Point to {expression}."`` (card, "Pointing Video QA": "Point to the
  penguins."), or ``"Track {expression}."`` with ``request: track`` (card, "Tracking Video QA": "Track the
  player who is dunking");
- a counting question ("how many ...?", the project's rule ``task_adapter.task_of``): sent as it is
  (the Molmo2-VideoPoint data's questions, "How many eggs are in the jar?"); the answer, "Counting the
  <points ...>eggs</points> shows a total of 7.", counts by its points.

The window's frames are shown as one video with their timestamps (seconds since the first shown frame);
when the window is longer than the folder allows (``num_frames``, ``max_fps``), frames are sampled with
the released ``uniform_last_frame`` rule, which keeps the newest. The answer is parsed with
``parse_video_points``; each point's time is mapped to the shown frame printed with that time. Output that
cannot be read (a random model's, a cut-off answer) gives no points: the target is lost, nothing raises.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from glus_ros.backends.base import FrameGrounding, GroundingBackend, TargetGrounding
from glus_ros.backends.glus import check_window
from glus_ros.backends.molmo2_folder import Molmo2Folder, check_loaded_weights, read_molmo2_folder
from glus_ros.backends.molmo2_inputs import Molmo2Inputs, sample_frame_indices
from glus_ros.model.config import MemoryConfig
from glus_ros.model.prompting import clean_expression
from glus_ros.model.sam2_tracker import SAM2Tracker, TrackerConfig
from glus_ros.model.task_adapter import COUNTING, task_of
from glus_ros.points.text import VideoPoint, parse_video_points
from glus_ros.points.trackers import PointTracker

log = logging.getLogger(__name__)

POINT_PROMPT = "Point to {expression}."
TRACK_PROMPT = "Track {expression}."
DEFAULT_MAX_NEW_TOKENS = 512
UNREADABLE_LOG_PERIOD_S = 10.0   # unreadable answers are logged at most this often
TIME_DECIMALS = 1          # Molmo2 prints frame times with one decimal (processing_molmo2.get_video_string)


@dataclass
class Molmo2Settings:
    """The ``molmo2:`` section of a backend config (models/molmo2.yaml documents every key)."""

    folder: str | None = None
    preprocessing: str = "auto"          # auto | own | transformers
    request: str = "point"               # point | track: how a referring expression is asked
    point_prompt: str = POINT_PROMPT
    track_prompt: str = TRACK_PROMPT
    max_new_tokens: int | None = None    # None: the folder's generation_config.json max_new_tokens, else 512
    max_frames: int | None = None        # frames shown per request (None: the folder's num_frames)
    max_fps: float | None = None         # None: the folder's max_fps
    dtype: str = "auto"                  # weights: auto (the folder's), fp32, bf16
    tracker: str = "sam2"                # sam2 (--sam2-checkpoint FILE.pt) | a SAM 3 tracker / EdgeTAM folder

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, source: str) -> Molmo2Settings:
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{source}: unknown molmo2 keys {unknown}; known: {sorted(known)}")
        settings = cls(**raw)
        if settings.request not in ("point", "track"):
            raise ValueError(f"{source}: molmo2.request must be 'point' or 'track', got {settings.request!r}")
        for name in ("point_prompt", "track_prompt"):
            if "{expression}" not in getattr(settings, name):
                raise ValueError(f"{source}: molmo2.{name} must contain '{{expression}}'")
        if any(v is not None and v < 1 for v in (settings.max_new_tokens, settings.max_frames)):
            raise ValueError(f"{source}: molmo2.max_new_tokens and max_frames must be >= 1")
        if not isinstance(settings.tracker, str) or not settings.tracker:
            raise ValueError(f"{source}: molmo2.tracker must be 'sam2' or a tracker folder, got {settings.tracker!r}")
        if settings.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"{source}: molmo2.dtype must be auto, fp32 or bf16, got {settings.dtype!r}")
        return settings


@dataclass
class Answer:
    """One generated answer: its text, points and whether generation ended on its own."""

    text: str
    points: list[VideoPoint] = field(default_factory=list)
    finished: bool = True


def question_for(expression: str, settings: Molmo2Settings) -> str:
    """The prompt text of a request (module doc): counting questions verbatim, expressions templated."""
    if task_of(expression) == COUNTING:
        question = expression[0].upper() + expression[1:]
        return question if question.endswith("?") else question + "?"
    template = settings.point_prompt if settings.request == "point" else settings.track_prompt
    return template.format(expression=expression.rstrip(".!? "))


def frame_of_time(times: Sequence[float]) -> dict[str, int]:
    """Printed time -> shown frame index (a later frame printed with the same time does not replace it)."""
    table: dict[str, int] = {}
    for i, t in enumerate(times):
        table.setdefault(f"{t:.{TIME_DECIMALS}f}", i)
    return table


class Molmo2Backend(GroundingBackend):
    name: ClassVar = "molmo2"
    answers: ClassVar = "points"
    # frames closer than this may print the same time in the prompt (its points could not tell them apart):
    # one printed decimal, with a margin so that rounding never prints two frames this far apart alike
    min_frame_gap_s: ClassVar[float] = 1.05 * 10.0 ** -TIME_DECIMALS

    def __init__(self, model, inputs: Molmo2Inputs, tracker: SAM2Tracker | PointTracker, settings: Molmo2Settings,
                 folder: Molmo2Folder, logits_processor=None) -> None:
        self.model = model.eval()
        self.inputs = inputs
        self._tracker = tracker.eval()
        self.settings = settings
        self.folder = folder
        self.logits_processor = logits_processor   # e.g. a constrained decoder (transformers LogitsProcessorList)
        self.last_answers: list[Answer] = []       # the answers of the latest ``ground`` (for logs and tests)
        tokenizer = inputs.tokenizer
        self._reserved = [t for t in tokenizer.all_special_tokens if t]
        self._unreadable = 0                       # answers without readable points so far
        self._unreadable_logged = -math.inf        # when the last one was logged (time.monotonic)

    @property
    def tracker(self) -> SAM2Tracker | PointTracker:
        return self._tracker

    def to(self, device: str | torch.device) -> Molmo2Backend:
        """Move the language model and the point tracker (the ROS node's off switch moves them to the CPU)."""
        self.model.to(device)
        self._tracker.to(device)
        return self

    @property
    def max_new_tokens(self) -> int:
        return self.settings.max_new_tokens or self.model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS

    @property
    def max_frames(self) -> int:
        return self.settings.max_frames or self.folder.video.num_frames

    @property
    def max_fps(self) -> float | None:
        return self.settings.max_fps if self.settings.max_fps is not None else self.folder.video.max_fps

    # --- requests -------------------------------------------------------------------------------
    def clean(self, expression: str) -> str:
        text = clean_expression(expression)
        for token in self._reserved:
            if token in text:
                raise ValueError(f"expression contains Molmo2's reserved token {token!r}")
        return text

    def sample_video(self, num_frames: int, fps: float) -> list[int]:
        """The released processor's ``uniform_last_frame`` choice, with this backend's frame and rate limits."""
        proc = dataclasses.replace(self.folder.video, num_frames=self.max_frames, max_fps=self.max_fps)
        return sample_frame_indices(num_frames, fps, proc)

    def shown_frames(self, timestamps: Sequence[float]) -> list[int]:
        """Which window frames are shown: all when at most ``max_frames``, else ``uniform_last_frame``
        sampled at their mean rate (the newest frame always kept)."""
        count = len(timestamps)
        if count <= self.max_frames:
            return list(range(count))
        span = timestamps[-1] - timestamps[0]
        return self.sample_video(count, (count - 1) / span if span > 0 else 1.0)

    @torch.inference_mode()
    def ground(self, window: Sequence[np.ndarray], expressions: Sequence[str],
               context: Sequence[np.ndarray] = (), timestamps: Sequence[float] | None = None,
               ) -> list[TargetGrounding]:
        """Molmo2 reads only ``window`` (put any older frames it should see into the window); ``context``
        is accepted for the common interface and ignored. ``timestamps`` default: 0.5 s apart (2 fps)."""
        check_window(window, ())
        texts = [self.clean(e) for e in expressions]
        if timestamps is None:
            timestamps = [0.5 * i for i in range(len(window))]
        if len(timestamps) != len(window) or any(b < a for a, b in itertools.pairwise(timestamps)):
            raise ValueError(f"need one non-decreasing timestamp per window frame, got {len(timestamps)} for "
                             f"{len(window)} frames")
        if not texts:
            return []
        shown = self.shown_frames(timestamps)
        frames = [window[i] for i in shown]
        times = [float(timestamps[i] - timestamps[shown[0]]) for i in shown]
        device = self.model.device
        video = {k: v.to(device) for k, v in self.inputs.video(frames).items()}
        pixels = video["pixel_values_videos"].to(self.model.dtype)
        encoded = {"video": self.model.get_video_features(pixels, video["video_token_pooling"], video["video_grids"])}
        table = frame_of_time(times)
        if len(table) < len(times):
            log.warning("frames shown closer than %.1f s apart print the same time; Molmo2's points on them go "
                        "to the first", 10.0 ** -TIME_DECIMALS)
        results, answers = [], []
        for text in texts:
            batch = self.inputs.build(frames, times, question_for(text, self.settings), video=video)
            answer = self._answer(batch, encoded)
            answers.append(answer)
            results.append(self._grounding(text, answer, table, shown))
        self.last_answers = answers
        return results

    def _answer(self, batch: dict[str, torch.Tensor], encoded: dict) -> Answer:
        """Greedy generation of one answer (the video's features computed once per window)."""
        device = self.model.device
        prompt = {k: v.to(device) for k, v in batch.items()
                  if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        tokenizer = self.inputs.tokenizer
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        out = self.model.generate(**prompt, mm_encoder_outputs=encoded, max_new_tokens=self.max_new_tokens,
                                  do_sample=False, logits_processor=self.logits_processor,
                                  eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        new = out[0, prompt["input_ids"].shape[1]:].tolist()
        stops = set(eos if isinstance(eos, list) else [eos])
        finished = bool(new) and new[-1] in stops
        text = tokenizer.decode(new, skip_special_tokens=True)
        return Answer(text, parse_video_points(text), finished)

    def _grounding(self, expression: str, answer: Answer, table: dict[str, int], shown: list[int]) -> TargetGrounding:
        frames: dict[int, FrameGrounding] = {}
        unplaced = 0
        for point in answer.points:
            slot = table.get(f"{point.time:.{TIME_DECIMALS}f}")
            if slot is None:
                unplaced += 1
                continue
            frames.setdefault(shown[slot], FrameGrounding(points=[])).points.append((point.x, point.y))
        if unplaced:
            log.warning("Molmo2 pointed at %d time(s) it was not shown; those points are dropped", unplaced)
        placed = [p for p in answer.points if table.get(f"{p.time:.{TIME_DECIMALS}f}") is not None]
        malformed = not placed and (not answer.finished or bool(re.search(r"<\s*(points?|tracks?)\b", answer.text,
                                                                           re.IGNORECASE)))
        if malformed:
            self._unreadable += 1
            now = time.monotonic()
            if now - self._unreadable_logged >= UNREADABLE_LOG_PERIOD_S:  # a stream re-grounds many times a second
                self._unreadable_logged = now
                log.warning("Molmo2's answer has no readable points (%s; %d unreadable answers so far, logged at most "
                            "every %.0f s): %.120r", "cut at max_new_tokens" if not answer.finished else "malformed",
                            self._unreadable, UNREADABLE_LOG_PERIOD_S, answer.text)
        return TargetGrounding(expression, frames, text=answer.text, count=len({p.object_id for p in placed}),
                               malformed=malformed)


def load_point_tracker(settings: Molmo2Settings, sam2_node: dict[str, Any] | str, memory: MemoryConfig,
                       sam2_checkpoint: str | Path | None, device: str = "cpu") -> SAM2Tracker | PointTracker:
    """The tracker ``molmo2.tracker`` names: SAM 2 from ``sam2_checkpoint`` (``sam2``), else a tracker folder.

    ``sam2_node``: a sam2 hydra node, or ``"auto"`` (the project's model config whose SAM 2 fits the
    checkpoint, ``sam2_tracker.match_sam2_node``).
    """
    from glus_ros.devices import resolve_device
    from glus_ros.model.checkpoints import assign_state, load_sam2_checkpoint, read_sam2_state
    from glus_ros.model.sam2_tracker import match_sam2_node

    if settings.tracker != "sam2":
        from glus_ros.backends.video_trackers import load_video_tracker

        if sam2_checkpoint is not None:
            raise ValueError(f"the tracker is the folder {settings.tracker} (--tracker / molmo2.tracker); "
                             "--sam2-checkpoint is not read with it")
        return load_video_tracker(settings.tracker, device)
    if sam2_checkpoint is None:
        raise ValueError("the Molmo2 backend turns points into masks with a point tracker: give an official SAM 2 "
                         "checkpoint with --sam2-checkpoint FILE.pt, or a SAM 3 tracker / EdgeTAM folder with "
                         "--tracker DIR (molmo2.tracker in a config)")
    sam2_path = Path(sam2_checkpoint)
    if not sam2_path.is_file():
        raise FileNotFoundError(f"SAM 2 checkpoint {sam2_path} does not exist")
    if sam2_node == "auto":
        state = read_sam2_state(sam2_path)
        name, sam2_node = match_sam2_node(state, sam2_path)
        log.info("SAM 2 configuration of %s: the sam2 node of %s", sam2_path, name)
        tracker = SAM2Tracker(TrackerConfig(sam2_node, memory))
        assign_state(tracker.sam.sam, state, str(sam2_path))
    else:
        tracker = SAM2Tracker(TrackerConfig(dict(sam2_node), memory))
        load_sam2_checkpoint(tracker.sam.sam, sam2_path)
    return tracker.to(resolve_device(device))


def load_molmo2_backend(folder: str | Path, settings: Molmo2Settings, sam2_node: dict[str, Any] | str,
                        memory: MemoryConfig, sam2_checkpoint: str | Path | None, device: str = "cpu",
                        ) -> Molmo2Backend:
    """Molmo2 from a local folder (transformers' classes, no remote code), its point tracker by
    ``load_point_tracker``."""
    from transformers import AutoTokenizer, Molmo2ForConditionalGeneration

    from glus_ros.devices import resolve_device

    checked = read_molmo2_folder(folder)   # all file errors before anything heavy loads
    target = resolve_device(device)
    tracker = load_point_tracker(settings, sam2_node, memory, sam2_checkpoint, device)
    dtype = {"auto": "auto", "fp32": torch.float32, "bf16": torch.bfloat16}[settings.dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checked.path))
        model, info = Molmo2ForConditionalGeneration.from_pretrained(str(checked.path), dtype=dtype,
                                                                     output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(f"{checked.path}: cannot load the Molmo2 model: {exc}") from exc
    check_loaded_weights(info, checked.path)
    if info.get("unexpected_keys"):
        log.warning("%s: unused tensors %s", checked.path, sorted(info["unexpected_keys"])[:6])
    vision = model.config.vision_config
    if (checked.video.patches_per_side ** 2 != vision.num_position_embeddings
            or checked.video.patch_size != vision.patch_size):
        raise ValueError(f"{checked.path}: video_preprocessor_config.json (size {checked.video.size}, patch "
                         f"{checked.video.patch_size}) does not give the vision tower's "
                         f"{vision.num_position_embeddings} patches of {vision.patch_size} px")
    inputs = Molmo2Inputs(checked.path, tokenizer, checked.chat_template, checked.video, checked.layout,
                          settings.preprocessing)
    return Molmo2Backend(model.to(target), inputs, tracker, settings, checked)
