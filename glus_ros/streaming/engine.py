"""Live GLUS on a camera stream (ROS-free): many language-referred targets, bounded memory, latest-frame-wins.

Every frame enters a bounded history; the MLLM sees context frames spread over that history plus the
newest ``num_query`` frames (the online query window) and its [SEG] prompt for the newest slot is decoded
by SAM 2 with the target's own memory bank. The "fast" schedule re-grounds with the MLLM only every
``reground_every`` frames (or for new / replaced / low-score targets) and otherwise reuses the target's
last prompt, so in between only SAM 2 memory propagation runs. Encoder outputs are cached per frame and
dropped with the frame, so memory stays bounded however long the stream runs.

Two kinds of target go another way through the MLLM (neither gets a grounding map nor point-head points):

* a target with a ``region`` (box or point) is grounded with the question "track <region>", its
  ``<region>`` token filled with the region's embedding. The region is in pixels of the frame that is
  current when the target is added, and the embedding is computed once, from the newest frame the engine
  holds when the target is first grounded (usually the next frame after the command; a live stream never
  has the exact frame the user clicked on any more), then reused for every re-grounding. The expression is
  only a label then.
* a target whose expression is a question (ends with "?") gets a grounded answer: it is generated once,
  on the target's first grounding frame, and kept. EVERY grounded phrase of the answer is tracked, each
  with its own [SEG] prompt and its own memory bank, and each gives its own output per frame: phrase 0
  under the target's id, phrase k >= 1 under ``<target_id>/phrase_<k>`` (``phrase_target_id``); every
  one of them carries the whole answer, its phrases and ``phrase_target_ids``. Re-groundings teacher-force
  the kept answer on the current window (one MLLM pass for the whole target) to refresh all phrases'
  prompts. An answer without a grounded phrase has no mask: the target gives one "lost" output and is
  never re-grounded. ``max_targets`` counts targets, not phrases.

Schedules. "full" and "fast" ground inline: the frame waits for the MLLM pass it triggers, and the prompt is
decoded on the very frame it was computed on. "live" runs two loops on one engine: the tracker (SAM 2 image
encoder, memory read, one batched mask decode for all targets and phrases, memory write) runs on every
frame it gets and never waits for the MLLM, while a grounding worker thread re-grounds in the background
on a snapshot of the newest window (context frames + query window as of the newest frame when it starts),
whenever a target is due: a new or replaced target, a score below ``reground_below``, or a prompt older
than ``reground_every`` frames (1: whenever the worker is free). A finished grounding is not applied to
the frame it was computed on, which the tracker has long published: it waits in the target until the
tracker's next frame, the newest one, where its [SEG] prompt replaces the old one (and its grounding map,
computed on the snapshot's newest frame, is that frame's mask prompt: a coarse map, a few frames stale at
most when the MLLM keeps up). Outputs say which frame a prompt comes from (``grounded_seq``) and how old it
is (``grounding_age``). Until its first grounding lands a new target has no prompt: its output is state
"grounding" with an empty mask, no box or point and score 0 (``grounded_seq`` None); a robot tells it from
"lost" (grounded, not visible) by the state. Groundings computed before a ``reset`` or a frame-size change
are discarded. With ``yield_to_tracker`` the worker pauses between transformer layers while the tracker
works on a frame (``priority.py``), so on a CPU the MLLM runs only in the tracker's idle time; off by
default, as on 2 cores with one torch thread per loop (``cpu_threads=1``) the two loops run side by side.

Context frames are spread over the history as ``context_span`` says (default "whole": evenly from the oldest
frame to the newest, both included; ``sampling.StreamingSampler``). Re-groundings reuse the context
(``prefix_cache``): each frame's vision-tower embedding is computed once and kept while the frame is in the
history, and the LLM keys/values over the context frames and their motion field are reused while the context
frames stay the same (``context_refresh`` keeps a choice of context frames for that many frames;
``model/prefix_cache.py``).

The engine's parts, one module each: ``config.py`` (EngineConfig), ``tracks.py`` (per-target state, window
snapshots, groundings), ``mllm.py`` (re-grounding targets on a window), ``live_worker.py`` (the live schedule's
grounding thread), ``outputs.py`` (a target's box, points and 3D point from its mask); this module holds the target
table, the frame path (history, worker, schedules) and the tracker step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from glus_ros.core.frames import clip_pixels, encode_sam
from glus_ros.core.grounders import ConversationGrounder
from glus_ros.core.tracking import VISIBLE_ABOVE, frame_mask
from glus_ros.devices import autocast_context
from glus_ros.model.config import LoopConfig
from glus_ros.model.glus import GLUSModel
from glus_ros.model.prefix_cache import ContextPrefixCache
from glus_ros.model.prompting import clean_expression
from glus_ros.model.region import Region
from glus_ros.model.sam2_head import MaskPrediction
from glus_ros.model.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_frame,
    normalise_uint8,
    resize_uint8,
    to_tensor,
)
from glus_ros.sampling import StreamingSampler
from glus_ros.streaming.config import SCHEDULES, EngineConfig
from glus_ros.streaming.live_worker import LiveGroundingWorker
from glus_ros.streaming.mllm import WindowGrounding
from glus_ros.streaming.outputs import target_output
from glus_ros.streaming.priority import TrackerPriority
from glus_ros.streaming.tracks import (
    Grounding,
    PhraseTrack,
    TargetTrack,
    UnknownTargetError,
    check_region_shape,
    is_question,
)
from glus_ros.streaming.types import (
    MODES,
    PHRASE_ID_MARK,
    CameraIntrinsics,
    FrameResult,
    StreamFrame,
    TargetOutput,
    TargetSpec,
    phrase_target_id,
)

log = logging.getLogger(__name__)
_DEFAULT_LOOP = LoopConfig()

__all__ = ["SCHEDULES", "VISIBLE_ABOVE", "EngineConfig", "StreamingEngine", "UnknownTargetError", "check_region_shape",
           "is_question"]


class StreamingEngine(WindowGrounding, LiveGroundingWorker):
    """Segments and tracks language-referred targets in a live stream; see the module docstring."""

    def __init__(self, model: GLUSModel, config: EngineConfig | None = None,
                 on_result: Callable[[FrameResult], None] | None = None) -> None:
        self.model = model.eval()
        self.config = config or EngineConfig()
        if self.config.yield_to_tracker and not hasattr(model, "vlm"):
            raise ValueError(f"yield_to_tracker pauses a GLUS MLLM between its layers; {type(self).__name__} has "
                             "no such hook: leave it off")
        num_query = self._window_sizes()[1]
        if self.config.history < num_query:
            raise ValueError(f"history {self.config.history} must hold at least the {num_query} query frames")
        if self.config.cpu_threads:
            torch.set_num_threads(self.config.cpu_threads)
        self._on_result = on_result
        self._model_lock = threading.Lock()      # one frame through the tracker at a time; guards history and banks
        self._targets_lock = threading.Lock()    # short: the target table (and live groundings waiting / in flight)
        self._cond = threading.Condition()       # pending slot, stats, worker life
        self._tokenizer_lock = threading.Lock()  # the tokenizer is shared by target validation and the MLLM pass
        self._frames_lock = threading.Lock()     # short: the per-frame CLIP inputs and embeddings
        self._mllm_lock = threading.Lock()       # one MLLM pass at a time (the prefix cache is not thread-safe)
        self._targets: dict[str, TargetTrack] = {}
        self._assigned = 0
        self._sampler = self._new_sampler()
        # frame step -> what the MLLM reads of it: CLIP-sized pixels (cheap to keep); a pointing backend's frame
        self._clip_inputs: dict[int, torch.Tensor | np.ndarray] = {}
        self._clip_embeds: dict[int, torch.Tensor] = {}   # frame step -> vision tower output, computed on demand
        self._seqs: dict[int, int] = {}                   # frame step -> its seq
        self._stamps: dict[int, float] = {}               # frame step -> its stamp (a pointing backend's times)
        self._newest_image: np.ndarray | None = None
        self._prefix_cache = ContextPrefixCache() if self.config.prefix_cache else None
        self._size: tuple[int, int] | None = None
        self._step = 0
        self._epoch = 0                          # resets so far: live groundings of an older epoch are discarded
        self._pending: tuple[StreamFrame, float] | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()     # one per worker, so a late old worker never outlives stop()
        self._seq = 0
        self._dropped_since_result = 0
        self._stats = {"frames_in": 0, "frames_processed": 0, "frames_dropped": 0, "errors": 0}
        # live schedule: the grounding worker
        self._priority = TrackerPriority()
        self._ground_cond = threading.Condition()  # wakes the grounding worker; signals wait_grounded()
        self._ground_wanted = False
        self._grounder: threading.Thread | None = None
        self._grounder_stop = threading.Event()
        self._grounding_stats = {"groundings": 0, "targets_grounded": 0, "ms_total": 0.0, "ms_last": 0.0,
                                 "errors": 0}
        # the released weights (loop.prompt_format llava_v1): the official step per target, exact preprocessing
        self._conversations: dict[str, ConversationGrounder] = {}

    @property
    def _loop(self) -> LoopConfig:
        """The model's loop policies; SAM 2's own rules (the defaults) for a tracker that is not a GLUS model."""
        cfg = getattr(self.model, "cfg", None)
        return getattr(cfg, "loop", None) or _DEFAULT_LOOP

    @property
    def exact_inputs(self) -> bool:
        """Whether frames are preprocessed exactly as offline (CLIPImageProcessor's crop, the float SAM 2 resize):
        the released weights, and any model whose vision tower wants the processor's crop (``vlm.clip_preprocess``);
        else the faster 8-bit square resizes."""
        cfg = getattr(self.model, "cfg", None)
        return self.conversation or (cfg is not None and cfg.vlm.clip_preprocess != "square")

    @property
    def conversation(self) -> bool:
        """Whether targets are grounded with the released weights' llava_v1 conversation (one token per step)."""
        return self._loop.prompt_format == "llava_v1"

    def _window_sizes(self) -> tuple[int, int]:
        """(context frames, query frames) one MLLM pass reads: the model's sampling config."""
        sampling = self.model.cfg.sampling
        return sampling.num_context, sampling.num_query

    def _new_sampler(self) -> StreamingSampler:
        num_context, num_query = self._window_sizes()
        span = "official" if self._loop.context_frames == "official" else self.config.context_span
        return StreamingSampler(self.config.history, num_context, num_query, self.config.context_refresh, span)

    @property
    def live(self) -> bool:
        """Whether the MLLM runs in its own worker beside the tracker (schedule "live")."""
        return self.config.schedule == "live"

    # --- targets --------------------------------------------------------------------------------
    def _checked_spec_common(self, spec: TargetSpec) -> TargetSpec:
        """Checks every engine makes: id, mode; returns the spec with its id stripped."""
        if not isinstance(spec.target_id, str):
            raise ValueError(f"target_id must be a string, got {type(spec.target_id).__name__}")
        if spec.mode not in MODES:
            raise ValueError(f"unknown mode '{spec.mode}' (one of {', '.join(MODES)})")
        if PHRASE_ID_MARK in spec.target_id:
            raise ValueError(f"target_id {spec.target_id!r} contains '{PHRASE_ID_MARK}', which names the phrases of "
                             "a question target's answer; choose another id")
        return dataclasses.replace(spec, target_id=spec.target_id.strip())

    def _checked_spec(self, spec: TargetSpec) -> TargetSpec:
        spec = self._checked_spec_common(spec)
        if self.conversation:  # the released weights: referring expressions, checked as the official prompt takes them
            if spec.region is not None or is_question(spec.expression):
                raise ValueError("the released GLUS weights answer referring expressions only: no region prompt "
                                 "and no question (a model of the project's own family takes both)")
            with self._tokenizer_lock:
                self._conversation_for(spec.expression)
            return spec
        if spec.region is not None:  # the expression is only a label: it may be empty
            region = self._checked_region(spec.region)
            empty = isinstance(spec.expression, str) and not spec.expression.strip()
            text = "" if empty else clean_expression(spec.expression)
            return dataclasses.replace(spec, target_id=spec.target_id.strip(), expression=text, region=region)
        text = clean_expression(spec.expression)
        sampling = self.model.cfg.sampling
        with self._tokenizer_lock:  # token-length limit: fail now, not in the worker
            self.model.prompts.encode(text, sampling.num_context, sampling.num_query)
        return dataclasses.replace(spec, target_id=spec.target_id.strip(), expression=text)

    def _checked_region(self, region: Region) -> Region:
        """Bounds are checked against the newest frame's size when one was seen, else at the first grounding."""
        if not isinstance(region, Region):
            raise ValueError(f"region must be a Region, got {type(region).__name__}")
        check_region_shape(region)
        region = dataclasses.replace(region, frame=0)  # always "the current frame" here
        size = self._size
        if size is not None:
            region.validate(size[1], size[0])
        return region

    def _new_target(self, spec: TargetSpec) -> TargetTrack:
        return TargetTrack(spec, self.model.new_memory_bank())

    def add_target(self, spec: TargetSpec) -> str:
        """Track a new target; an empty id gets ``target_<n>``. Returns the id.

        A region outside the image or of zero area is a ValueError here when a frame was seen; before the
        first frame its bounds are checked at its first grounding, where a bad region drops the target
        (logged and counted in ``stats["errors"]``; the other targets go on).
        """
        spec = self._checked_spec(spec)
        with self._targets_lock:
            if len(self._targets) >= self.config.max_targets:
                raise ValueError(f"already tracking {len(self._targets)} targets (max_targets "
                                 f"{self.config.max_targets}): remove one first")
            if not spec.target_id:
                while f"target_{self._assigned}" in self._targets:
                    self._assigned += 1
                spec = dataclasses.replace(spec, target_id=f"target_{self._assigned}")
                self._assigned += 1
            elif spec.target_id in self._targets:
                raise ValueError(f"target '{spec.target_id}' already exists: use replace to change its expression")
            self._targets[spec.target_id] = self._new_target(spec)
        return spec.target_id

    def replace_target(self, spec: TargetSpec) -> None:
        """New expression, region and/or mode for an existing target: re-grounded with a fresh memory (and a new
        region embedding or answer)."""
        spec = self._checked_spec(spec)
        with self._targets_lock:
            if spec.target_id not in self._targets:
                raise UnknownTargetError(spec.target_id, list(self._targets))
            self._targets[spec.target_id] = self._new_target(spec)

    def remove_target(self, target_id: str) -> None:
        with self._targets_lock:
            if target_id not in self._targets:
                raise UnknownTargetError(target_id, list(self._targets))
            del self._targets[target_id]

    def clear_targets(self) -> None:
        with self._targets_lock:
            self._targets.clear()

    def targets(self) -> list[tuple[TargetSpec, str]]:
        """(spec, state of its last frame) in the order they were added; a target not yet seen reads "grounding"."""
        with self._targets_lock:
            return [(t.spec, t.state) for t in self._targets.values()]

    # --- frames ---------------------------------------------------------------------------------
    @staticmethod
    def validate_frame(frame: StreamFrame) -> None:
        """Reject a frame the model cannot read, naming what is wrong (ValueError)."""
        if not isinstance(frame, StreamFrame):
            raise ValueError(f"expected a StreamFrame, got {type(frame).__name__}")
        check_frame(frame.image, "image")
        height, width = frame.image.shape[:2]
        if frame.depth is not None:
            depth = frame.depth
            if not isinstance(depth, np.ndarray) or depth.ndim != 2:
                raise ValueError(f"depth: expected an (H, W) array, got shape {getattr(depth, 'shape', None)}")
            if depth.shape != (height, width):
                raise ValueError(f"depth is {depth.shape[1]}x{depth.shape[0]} but the image is {width}x{height}: "
                                 "register depth to the colour image first")
            if not np.issubdtype(depth.dtype, np.floating):
                raise ValueError(f"depth: expected float metres, got {depth.dtype} "
                                 "(convert 16UC1 millimetres with depth_from_16uc1)")
        if frame.intrinsics is not None and not isinstance(frame.intrinsics, CameraIntrinsics):
            raise ValueError(f"intrinsics: expected CameraIntrinsics, got {type(frame.intrinsics).__name__}")


    def process(self, frame: StreamFrame) -> FrameResult:
        """One frame through the model, synchronously (tests, offline use); its seq is kept as given.

        Live schedule: the tracker step runs here and the grounding worker (started on first use) beside it;
        :meth:`wait_grounded` lets a replay wait for the worker between frames.
        """
        start = time.perf_counter()
        self.validate_frame(frame)
        if self.live:
            self._start_grounder()
        with self._cond:
            self._stats["frames_in"] += 1
        return self._run(frame, start)

    def start(self) -> None:
        """Start the worker thread (idempotent); live schedule: also the grounding worker."""
        if self.live:
            self._start_grounder()
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop_event = threading.Event()
            self._thread = threading.Thread(target=self._worker, args=(self._stop_event,),
                                            name="glus-streaming-engine", daemon=True)
            self._thread.start()

    def submit(self, frame: StreamFrame) -> None:
        """Queue a frame for the worker without waiting; an older frame still pending is dropped and counted.

        Bad frames raise ValueError here, in the caller. Before start() the frame just waits in the slot.
        """
        self.validate_frame(frame)
        now = time.perf_counter()
        with self._cond:
            self._seq += 1
            frame.seq = self._seq
            self._stats["frames_in"] += 1
            if self._pending is not None:
                self._stats["frames_dropped"] += 1
                self._dropped_since_result += 1
            self._pending = (frame, now)
            self._cond.notify()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after its current frame and join it; a frame still pending is dropped (and counted).
        Live schedule: the grounding worker stops after its current pass too (its result is kept for later)."""
        with self._cond:
            self._stop_event.set()
            thread, self._thread = self._thread, None
            if self._pending is not None:
                self._pending = None
                self._stats["frames_dropped"] += 1
                self._dropped_since_result += 1
            self._cond.notify_all()
        grounder = self._stop_grounder()
        for worker in (thread, grounder):
            if worker is not None:
                worker.join(timeout_s)
                if worker.is_alive():
                    log.warning("streaming %s still busy %.1f s after stop(); it exits after its frame",
                                worker.name, timeout_s)

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> dict[str, int]:
        """frames_in, frames_processed, frames_dropped and errors (worker exceptions, on_result's included)."""
        with self._cond:
            return dict(self._stats)

    def cache_sizes(self) -> dict[str, int]:
        """How much per-frame and per-target state is held (all bounded; for monitoring and tests)."""
        with self._model_lock, self._targets_lock:
            banks = [len(b) for t in self._targets.values() for b in [t.bank, *(p.bank for p in t.more)]
                     if b is not None]
            return {"history": len(self._sampler), "clip_inputs": len(self._clip_inputs),
                    "clip_embeds": len(self._clip_embeds), "max_memory_entries": max(banks, default=0)}

    def reset(self) -> None:
        """Forget history and every target's memory (targets stay and are re-grounded on the next frame).

        Region embeddings and answers are kept: they say what the target is, not where it was.
        """
        with self._model_lock:
            self._reset_locked()

    # --- internals ------------------------------------------------------------------------------
    def _reset_locked(self) -> None:
        self._sampler = self._new_sampler()
        with self._frames_lock:
            self._clip_inputs.clear()
            self._clip_embeds.clear()
            self._seqs.clear()
            self._stamps.clear()
        self._newest_image = None  # (the prefix cache matches its entries exactly: nothing stale can hit)
        self._size = None
        self._step = 0
        self._epoch += 1
        with self._targets_lock:
            for target in self._targets.values():
                target.bank = self.model.new_memory_bank()
                target.prompt = None
                target.needs_ground = True
                target.since_ground = 0
                target.score = 1.0
                target.pending = None
                target.grounded_step = target.grounded_seq = None
                for phrase in target.more:
                    phrase.bank = self.model.new_memory_bank()
                    phrase.prompt = None
                    phrase.score = 1.0

    def _worker(self, stop: threading.Event) -> None:
        while True:
            with self._cond:
                while self._pending is None and not stop.is_set():
                    self._cond.wait()
                if stop.is_set():
                    return
                frame, submitted = self._pending
                self._pending = None
            try:
                result = self._run(frame, submitted)
                if self._on_result is not None:
                    self._on_result(result)
            except Exception:
                log.exception("streaming engine failed on frame seq %d (stamp %.3f); continuing", frame.seq,
                              frame.stamp)
                with self._cond:
                    self._stats["errors"] += 1

    def _run(self, frame: StreamFrame, submitted: float) -> FrameResult:
        height, width = frame.image.shape[:2]
        busy = self._priority.busy() if self.live else contextlib.nullcontext()
        with busy, self._model_lock:
            if self._size is not None and self._size != (height, width):
                log.warning("frame size changed from %dx%d to %dx%d: resetting history and target memories",
                            self._size[1], self._size[0], width, height)
                self._reset_locked()
            self._size = (height, width)
            with self._targets_lock:
                active = list(self._targets.values())
            with torch.inference_mode(), autocast_context(self.model.device, self.config.dtype):
                outputs = self._infer(frame, active)
        if self.live:
            self._wake_grounder()
        with self._cond:
            self._stats["frames_processed"] += 1
            dropped, self._dropped_since_result = self._dropped_since_result, 0
        return FrameResult(stamp=frame.stamp, frame_id=frame.frame_id, seq=frame.seq, width=width, height=height,
                           targets=outputs, latency_ms=(time.perf_counter() - submitted) * 1000.0,
                           frames_dropped=dropped, image=frame.image)

    def _due(self, target: TargetTrack) -> bool:
        """Inline schedules: whether the target is grounded on the current frame."""
        if target.answer_ids is not None and not target.seg_slots:
            return False  # an answer that grounds nothing: no [SEG] to refresh
        if self.config.schedule == "full" or target.needs_ground or target.prompt is None:
            return True
        score = min([target.score, *(p.score for p in target.more)])  # any phrase faded: re-ground them all
        return target.since_ground >= self.config.reground_every or score < self.config.reground_below

    def _due_live(self, target: TargetTrack, newest: int) -> bool:
        """Live schedule: whether the worker should ground the target on the window of frame step ``newest``."""
        if target.in_flight or target.pending is not None:
            return False
        if target.answer_ids is not None and not target.seg_slots:
            return False
        if target.needs_ground or target.prompt is None or target.grounded_step is None:
            return True
        score = min([target.score, *(p.score for p in target.more)])
        return newest - target.grounded_step >= self.config.reground_every or score < self.config.reground_below

    # --- the tracker ---------------------------------------------------------------------------
    def _push_frame(self, frame: StreamFrame) -> torch.Tensor:
        """Add the frame to the history (its CLIP input kept, frames no window can read dropped); returns the
        SAM 2 image encoder's input (1, 3, S, S). Both inputs are resized while the frame is 8-bit, once when
        the two encoders read the same size (``transforms.resize_uint8``)."""
        model = self.model
        if self.exact_inputs:
            # the released weights: CLIPImageProcessor's crop and the float SAM 2 resize, as the official code
            # (and the offline loop) make them, instead of the faster 8-bit square resizes below
            self._record_frame(frame, clip_pixels(model, [frame.image])[0])
            return to_tensor([frame.image]).to(model.device)
        clip_size, sam_size = model.cfg.vlm.image_size, model.sam.image_size
        small = resize_uint8(frame.image, clip_size).to(model.device)
        sam_small = small if sam_size == clip_size else resize_uint8(frame.image, sam_size).to(model.device)
        self._record_frame(frame, normalise_uint8(small, CLIP_MEAN, CLIP_STD)[0])
        return normalise_uint8(sam_small, IMAGENET_MEAN, IMAGENET_STD)

    def _record_frame(self, frame: StreamFrame, mllm_input: torch.Tensor | np.ndarray) -> None:
        """The frame joins the history under the next step with what the MLLM reads of it, its seq and stamp;
        frames no window can read any more are dropped from every per-frame store."""
        step = self._step
        self._step += 1
        self._sampler.push(step)
        self._newest_image = frame.image
        kept = set(self._sampler.buffered()) | set(self._sampler.context_frames())
        with self._frames_lock:
            self._clip_inputs[step] = mllm_input
            self._seqs[step] = frame.seq
            self._stamps[step] = frame.stamp
            for store in (self._clip_inputs, self._clip_embeds, self._seqs, self._stamps):
                for old in [s for s in store if s not in kept]:
                    del store[old]

    def _infer(self, frame: StreamFrame, active: list[TargetTrack]) -> list[TargetOutput]:
        model = self.model
        sam_pixels = self._push_frame(frame)
        if not active:
            return []
        # this frame only (the exact path hands over the frame's [0, 1] pixels, the fast one the SAM 2 input)
        features = encode_sam(model, sam_pixels) if self.exact_inputs else model.encode_sam_frames(sam_pixels)
        height, width = frame.image.shape[:2]
        landed = self._landed_groundings(active)
        fresh: dict[int, Grounding] = {}
        dropped: set[int] = set()
        unanswered: set[int] = set()  # full schedule, released weights: no [SEG] on this frame
        for target, grounding in landed:
            if grounding.epoch != self._epoch:
                continue  # computed on the history before a reset
            if grounding.error is not None:
                self._drop(target, grounding.error)
                dropped.add(id(target))
                continue
            self._apply(target, grounding)
            if grounding.no_seg:
                if self.config.schedule == "full":
                    unanswered.add(id(target))
                continue  # no new prompt: the target tracks on with its last one (if any)
            fresh[id(target)] = grounding
        tracks: list[tuple[TargetTrack, TargetTrack | PhraseTrack, str]] = []  # (target, track, output id)
        for target in active:
            if id(target) in dropped or target.prompt is None or id(target) in unanswered:
                continue
            tracks.append((target, target, target.spec.target_id))
            tracks += [(target, phrase, phrase_target_id(target.spec.target_id, k))
                       for k, phrase in enumerate(target.more, start=1)]
        decoded: dict[int, tuple[np.ndarray, float, str]] = {}
        if tracks:
            grids = [fresh[id(t)].grid if track is t and id(t) in fresh else None for t, track, _ in tracks]
            preds = model.track_steps(features, [track.prompt for _, track, _ in tracks],
                                      [track.bank for _, track, _ in tracks], grids)
            for (target, track, _), pred in zip(tracks, preds, strict=True):
                decoded[id(track)] = self._read_prediction(pred, track, id(target) in fresh, height, width)
        outputs = []
        for target in active:
            if id(target) in dropped:
                continue
            if id(target) in unanswered:  # the official step: an empty mask, and no memory for this frame
                if target.bank is not None:
                    target.bank.skip()
                target.since_ground += 1
                target.score, target.state = 0.0, "lost"
                outputs.append(self._output(target, np.zeros((height, width), dtype=bool), 0.0, "lost", frame))
                continue
            if target.prompt is None:
                if target.answer_ids is not None and not target.seg_slots:  # an answer that grounds nothing
                    target.score, target.state = 0.0, "lost"
                    outputs.append(self._output(target, np.zeros((height, width), dtype=bool), 0.0, "lost", frame))
                else:  # live: waiting for its first grounding
                    target.state = "grounding"
                    outputs.append(self._output(target, np.zeros((height, width), dtype=bool), 0.0, "grounding",
                                                frame))
                continue
            head_points = None
            grounding = fresh.get(id(target))
            if grounding is not None and grounding.points is not None:
                head_points = [(x * width, y * height) for x, y in grounding.points]
            target.since_ground += 1
            mask, score, state = decoded[id(target)]
            outputs.append(self._output(target, mask, score, state, frame, head_points))
            for k, phrase in enumerate(target.more, start=1):  # a question's further grounded phrases
                mask, score, state = decoded[id(phrase)]
                outputs.append(self._output(target, mask, score, state, frame,
                                            output_id=phrase_target_id(target.spec.target_id, k)))
        return outputs

    def _landed_groundings(self, active: list[TargetTrack]) -> list[tuple[TargetTrack, Grounding]]:
        """The groundings to apply on this frame: live, those the worker finished; inline, computed now."""
        if self.live:
            with self._targets_lock:
                landed = [(t, t.pending) for t in active if t.pending is not None]
                for target, _ in landed:
                    target.pending = None
            return landed  # type: ignore[return-value]
        due = [t for t in active if self._due(t)]
        if not due:
            return []
        start = time.perf_counter()
        landed = self._compute_groundings(self._snapshot(), due)
        self._count_grounding(len(landed), (time.perf_counter() - start) * 1000.0)
        return landed

    def _read_prediction(self, pred: MaskPrediction, track: TargetTrack | PhraseTrack, grounded: bool, height: int,
                         width: int) -> tuple[np.ndarray, float, str]:
        """A track's mask, score and state from its SAM 2 step; updates the track's score/state."""
        loop = self._loop
        mask, score = frame_mask(pred, height, width, loop)
        # with the visibility gate "lost" is SAM 2's object score; without it (the released weights) an empty mask
        visible = score > VISIBLE_ABOVE if loop.visibility_gate else bool(mask.any())
        state = ("grounding" if grounded else "tracking") if visible else "lost"
        track.score, track.state = score, state
        return mask, score, state

    def _apply(self, target: TargetTrack, grounding: Grounding) -> None:
        """A grounding's prompts (and, first time, region embedding or answer) into the target; tracker only."""
        if grounding.region_embed is not None and target.region_embed is None:
            target.region_embed = grounding.region_embed
        if grounding.answer is not None and target.answer_ids is None:
            ids, text, phrases, slots = grounding.answer
            target.answer_ids, target.answer, target.phrases, target.seg_slots = list(ids), text, phrases, slots
            target.more = [PhraseTrack(self.model.new_memory_bank()) for _ in slots[1:]]
        if not grounding.no_seg:
            target.prompt = grounding.prompt
        for phrase, prompt in zip(target.more, grounding.phrase_prompts, strict=False):
            phrase.prompt = prompt
        target.needs_ground = False
        target.since_ground = 0
        target.grounded_step, target.grounded_seq = grounding.step, grounding.seq

    # --- the MLLM --------------------------------------------------------------------------------
    def _drop(self, target: TargetTrack, exc: Exception) -> None:
        """Remove a target the worker cannot ground; reported like other worker errors, nothing else is lost."""
        target_id = target.spec.target_id
        log.error("dropping target '%s': %s", target_id, exc)
        with self._targets_lock:
            if self._targets.get(target_id) is target:  # not replaced meanwhile
                del self._targets[target_id]
        with self._cond:
            self._stats["errors"] += 1

    def _output(self, target: TargetTrack, mask: np.ndarray, score: float, state: str, frame: StreamFrame,
                head_points: list[tuple[float, float]] | None = None, output_id: str | None = None) -> TargetOutput:
        return target_output(target, mask, score, state, frame, self._step - 1, head_points, output_id)
