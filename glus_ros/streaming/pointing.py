"""The streaming engine for a backend that answers with points (Molmo2): points seed a tracker, it tracks.

The loops, schedules, target table, drops and statistics are :class:`StreamingEngine`'s; what differs is
what a grounding is and how the tracker uses it (VideoMolmo's design, run causally):

* a re-grounding shows the backend a short video: ``window_frames`` frames spread evenly over the history,
  the newest included, with their camera stamps as times (frames closer than the backend can tell apart,
  Molmo2's 0.1 s, are left out; non-increasing stamps: 0.5 s apart). It answers
  each target with points on some of those frames; the newest frame it pointed on is the **anchor**;
* the anchor's points become point prompts on the anchor frame (one positive point per prompt, the mask
  their union) of the backend's point tracker (``points/trackers.py``: SAM 2, SAM 3's tracker or EdgeTAM),
  and that memory, written as "object present", starts the target's fresh track. Every later frame is
  decoded from that memory alone (no prompt), the tracker's usual memory propagation. The anchor frame is
  one the engine still holds (the window is a snapshot of the history), so a grounding that finishes
  frames later is applied where the points were made, and carried to the newest frame by memory: a stale
  point is never put on a newer frame;
* an answer with no points (the model says it is not there) makes the target "lost" until a later
  grounding finds it (its low score makes it due at once); an answer that cannot be read keeps the
  target's track as it was (and a target not yet grounded stays "grounding", asked again next time).

Backward propagation and fusion (VideoMolmo's) need frames after the anchor, which a live stream does not
have yet; ``glus-ros segment --points`` does them offline. Regions and open questions are GLUS features
and are refused here with a clear error; counting questions ("how many ...?") are asked as they are and
every object the answer points at is part of the target's mask (``TargetOutput.points`` holds the points).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from glus_ros.backends.base import GroundingBackend, TargetGrounding
from glus_ros.model.transforms import logits_to_frame
from glus_ros.points.coords import to_pixels
from glus_ros.points.sam2_points import as_point_tracker
from glus_ros.points.trackers import PointTrack
from glus_ros.streaming.config import EngineConfig
from glus_ros.streaming.engine import StreamingEngine
from glus_ros.streaming.tracks import Grounding, TargetTrack, Window, is_question
from glus_ros.streaming.types import FrameResult, StreamFrame, TargetOutput, TargetSpec

log = logging.getLogger(__name__)

DEFAULT_WINDOW_FRAMES = 8
DEFAULT_FRAME_GAP_S = 0.5   # times given to the backend when camera stamps do not increase


def spaced_frames(steps: list[int], times: list[float], min_gap_s: float) -> tuple[list[int], list[float]]:
    """The frames at least ``min_gap_s`` apart, walking back from the newest (always kept); oldest first."""
    kept_steps, kept_times = [steps[-1]], [times[-1]]
    for step, time in zip(reversed(steps[:-1]), reversed(times[:-1]), strict=True):
        if kept_times[-1] - time >= min_gap_s:
            kept_steps.append(step)
            kept_times.append(time)
    return kept_steps[::-1], kept_times[::-1]


@dataclass(eq=False)
class _PointGrounding(Grounding):
    """A pointing answer: ``points`` (normalised) on the anchor frame, ``image`` that frame ([] points: absent)."""

    image: np.ndarray | None = None
    answered: bool = True                # False: the answer could not be read (keep the track as it is)


class PointingStreamingEngine(StreamingEngine):
    """Tracks targets a pointing backend (``answers == "points"``) grounds; see the module docstring."""

    def __init__(self, backend: GroundingBackend, config: EngineConfig | None = None,
                 on_result: Callable[[FrameResult], None] | None = None,
                 window_frames: int = DEFAULT_WINDOW_FRAMES) -> None:
        if backend.answers != "points":
            raise ValueError(f"the {backend.name} backend answers with {backend.answers}, not points: use "
                             "StreamingEngine with its model")
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {window_frames}")
        config = config or EngineConfig()
        self.backend = backend
        self.window_frames = window_frames
        # the engine's model is the point tracker: a target's "memory bank" is its track (PointTrack)
        self.points = as_point_tracker(backend.tracker)
        super().__init__(self.points, config, on_result)  # type: ignore[arg-type]

    # --- what differs from the GLUS engine ---------------------------------------------------------
    def _window_sizes(self) -> tuple[int, int]:
        # the newest frame is the query window; the others are spread over the whole history (span "whole"
        # repeats the newest among them, which the window then shows once)
        return self.window_frames, 1

    def _checked_spec(self, spec: TargetSpec) -> TargetSpec:
        if spec.region is not None:
            raise ValueError(f"the {self.backend.name} backend points at what an expression names; a region "
                             "target ('track this box') needs a GLUS model")
        if isinstance(spec.expression, str) and is_question(spec.expression):
            raise ValueError(f"the {self.backend.name} backend answers referring expressions and counting "
                             "questions ('how many ...?'); a grounded answer to a question needs a GLUS model")
        spec = self._checked_spec_common(spec)
        return dataclasses.replace(spec, expression=self.backend.clean(spec.expression))

    def _push_frame(self, frame: StreamFrame) -> None:  # type: ignore[override]
        """Keep the frame itself for the backend (it does its own preprocessing)."""
        self._record_frame(frame, frame.image)

    def _compute_groundings(self, window: Window, targets: list[TargetTrack]) -> list[tuple[TargetTrack, Grounding]]:
        steps = sorted(set(window.context) | set(window.query))
        with self._frames_lock:
            stamps = [self._stamps.get(s) for s in steps]
            seqs = {s: self._seqs.get(s, window.seq) for s in steps}
        times: list[float] | None = [float(t) for t in stamps if t is not None]
        if len(times) != len(steps) or any(b <= a for a, b in itertools.pairwise(times)):
            times = None   # the backend's default spacing
        else:
            steps, times = spaced_frames(steps, times, self.backend.min_frame_gap_s)
        frames = [window.inputs[s] for s in steps]
        with self._mllm_lock:
            answers = self.backend.ground(frames, [t.spec.expression for t in targets], timestamps=times)
        results: list[tuple[TargetTrack, Grounding]] = []
        for target, answer in zip(targets, answers, strict=True):
            results.append((target, self._anchor(window, steps, frames, seqs, answer)))
        return results

    @staticmethod
    def _anchor(window: Window, steps: list[int], frames: list[np.ndarray], seqs: dict[int, int],
                answer: TargetGrounding) -> _PointGrounding:
        """The newest frame the answer points on (module doc); no points anywhere: absent on the newest frame."""
        pointed = sorted(i for i, g in answer.frames.items() if g.points is not None)
        if not pointed:
            empty = torch.zeros(0, 2)
            return _PointGrounding(window.step, window.seq, window.epoch, prompt=empty, points=[],
                                   answered=not answer.malformed)
        i = pointed[-1]
        points = [(float(x), float(y)) for x, y in answer.frames[i].points or []]
        return _PointGrounding(steps[i], seqs[steps[i]], window.epoch, prompt=torch.tensor(points).view(-1, 2),
                               points=points, image=frames[i])

    def _infer(self, frame: StreamFrame, active: list[TargetTrack]) -> list[TargetOutput]:
        self._push_frame(frame)
        if not active:
            return []
        features = self.points.encode(frame.image)
        height, width = frame.image.shape[:2]
        current = self._step - 1
        anchored: dict[int, tuple[np.ndarray, list[tuple[float, float]]]] = {}
        for target, grounding in self._landed_groundings(active):
            if grounding.epoch != self._epoch:
                continue  # computed on the history before a reset
            assert isinstance(grounding, _PointGrounding)
            if not grounding.answered:
                target.needs_ground = target.prompt is None  # unreadable: keep the track, ask again if none
                continue
            self._apply(target, grounding)
            target.bank = self.points.new_track()  # type: ignore[assignment]
            if grounding.points:
                now = grounding.step == current
                logits = self._seed(target, grounding, features if now else None)
                if now:  # pointed on this very frame (inline schedules): the anchor mask is its output
                    mask = (logits_to_frame(logits, height, width)[0] > 0).cpu().numpy()
                    anchored[id(target)] = (mask, to_pixels(grounding.points, height, width))
        outputs = []
        for target in active:
            if target.prompt is None:  # waiting for its first grounding
                target.state = "grounding"
                outputs.append(self._output(target, np.zeros((height, width), dtype=bool), 0.0, "grounding", frame))
                continue
            if id(target) in anchored:
                mask, points = anchored[id(target)]
                target.score, target.state = 1.0, "grounding"
                outputs.append(self._output(target, mask, 1.0, "grounding", frame, points))
            elif target.prompt.numel() == 0:  # the backend says it is not there
                target.score, target.state = 0.0, "lost"
                outputs.append(self._output(target, np.zeros((height, width), dtype=bool), 0.0, "lost", frame))
            else:
                assert isinstance(target.bank, PointTrack)
                pred = target.bank.step(features)
                mask, score, state = self._read_prediction(pred, target, False, height, width)
                outputs.append(self._output(target, mask, score, state, frame))
            target.since_ground += 1
        return outputs

    def _seed(self, target: TargetTrack, grounding: _PointGrounding, features: object | None) -> torch.Tensor:
        """Points on the anchor frame -> the start of the target's fresh track; returns the anchor mask's
        logits (1, 1, S, S) at the tracker's input size."""
        image = grounding.image
        assert image is not None and grounding.points is not None
        height, width = image.shape[:2]
        if features is None:  # an older frame of the history: encode it again (one image-encoder pass)
            features = self.points.encode(image)
        assert isinstance(target.bank, PointTrack)
        return target.bank.seed(features, to_pixels(grounding.points, height, width), height, width).logits
