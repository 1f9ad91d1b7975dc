"""Grounded answers, region prompts and several objects per request on a whole video (ROS-free, GLaMM style).

``GroundedSegmenter.answer`` asks a question about a video: the model writes an answer whose marked
phrases (``<p>two red circles</p> [SEG]``) are each tied to a mask track. The answer is generated once,
on the first query window from the start frame; every phrase is then tracked over the whole video with its
OWN bounded memory bank (one object per bank, as GLUS trains it), so objects never write into each other's
memory, and results are keyed by target id (``phrase_0``, ``phrase_1``, ...). ``segment_region`` is
"track this": a user box or point on a frame replaces the ``<region>`` token of ``track <region>``, and the
normal referring path (one [SEG] per query frame, one memory bank) segments it forward and backward from
that frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glus_ros.core.frames import FrameEncoder
from glus_ros.core.loop import VideoSegmentation
from glus_ros.devices import autocast_context
from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.prompting import clean_question, parse_answer
from glus_ros.model.region import TRACK_REGION_QUESTION, WHAT_REGION_QUESTION, Region
from glus_ros.model.transforms import check_video_size, logits_to_frame
from glus_ros.sampling import context_frame_indices, propagation_orders, query_windows

__all__ = ["TRACK_REGION_QUESTION", "WHAT_REGION_QUESTION", "GroundedAnswer", "GroundedPhrase", "GroundedSegmenter",
           "Region", "check_regions"]


@dataclass
class GroundedPhrase:
    """One grounded phrase of an answer and its mask track; ``text == answer[start:end]``."""

    text: str
    start: int
    end: int
    target_id: str
    masks: np.ndarray   # (T, H, W) bool
    scores: np.ndarray  # (T,) probability that the object is visible


@dataclass
class GroundedAnswer:
    """The plain answer text, its grounded phrases keyed by target id, and what parsing had to repair."""

    text: str
    phrases: list[GroundedPhrase]
    start_frame: int
    issues: list[str] = field(default_factory=list)
    marked: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def by_target(self) -> dict[str, GroundedPhrase]:
        return {p.target_id: p for p in self.phrases}

    def to_json(self) -> dict[str, Any]:
        """What ``glus-ros ask`` writes to answer.json (masks go to PNG files)."""
        return {
            "answer": self.text, "marked": self.marked, "start_frame": self.start_frame, "issues": self.issues,
            "phrases": [{"text": p.text, "start": p.start, "end": p.end, "target_id": p.target_id,
                         "scores": [round(float(s), 4) for s in p.scores],
                         "frames_visible": int(p.masks.reshape(len(p.masks), -1).any(axis=1).sum())}
                        for p in self.phrases],
            "timings": self.timings,
        }


def check_regions(regions: Sequence[Region], num_frames: int, width: int, height: int) -> list[Region]:
    """Every region is a Region on an existing frame and inside the image; ValueError naming it otherwise."""
    out = []
    for i, r in enumerate(regions):
        if not isinstance(r, Region):
            raise ValueError(f"region {i} must be a Region, got {type(r).__name__}")
        if isinstance(r.frame, bool) or not isinstance(r.frame, (int, np.integer)) or not 0 <= r.frame < num_frames:
            raise ValueError(f"region {i} ({r.describe()}) is on frame {r.frame!r}, the video has {num_frames} frames")
        out.append(r.validate(width, height))
    return out


class _PerWindow:
    """Prompts for a frame of a query window: ``compute(window)`` runs at most once per window (one MLLM pass),
    ``select(result, window, frame)`` picks the frame's (K, prompt_dim) prompts from it."""

    def __init__(self, compute: Callable[[list[int]], torch.Tensor],
                 select: Callable[[torch.Tensor, list[int], int], torch.Tensor]) -> None:
        self.compute, self.select = compute, select
        self.window: tuple[int, ...] | None = None
        self.result: torch.Tensor | None = None

    def __call__(self, window: list[int], frame: int) -> torch.Tensor:
        if tuple(window) != self.window or self.result is None:
            self.window, self.result = tuple(window), self.compute(window)
        return self.select(self.result, window, frame)


class GroundedSegmenter:
    """Grounded answers and region tracking over a whole video with a :class:`GLUSModel`."""

    def __init__(self, model: GLUSModel, dtype: str = "fp32") -> None:
        self.model = model.eval()
        self.dtype = dtype
        self.banks: dict[str, MemoryBank | None] = {}  # the last run's memory banks by target id (inspection)

    def _window(self, query: Sequence[int]) -> list[int]:
        frames = list(query)
        while len(frames) < self.model.cfg.sampling.num_query:  # videos shorter than the window
            frames.append(frames[-1])
        return frames

    @torch.inference_mode()
    def answer(self, frames: Sequence[np.ndarray], question: str, regions: Sequence[Region] | None = None,
               answer_text: str | None = None, start_frame: int | None = None, max_new_tokens: int = 64,
               refresh_prompts: bool = False) -> GroundedAnswer:
        """Answer ``question`` about the video and track every grounded phrase of the answer.

        ``regions`` fill the question's ``<region>`` tokens in order (``Region.frame`` = video frame index).
        ``answer_text`` (marked, e.g. ``"<p>the cup</p> [SEG] and <p>the spoon</p> [SEG]"``) skips generation
        and grounds the given phrases (phrase grounding). ``start_frame`` (default: the first region's frame,
        else 0) picks the window the answer is generated on; tracking runs forward then backward from it.
        Each phrase reuses its [SEG] prompt in every window; ``refresh_prompts`` instead re-reads all phrases'
        prompts on each window by teacher-forcing the answer (one MLLM pass per window, as training sees it).
        """
        model = self.model
        question = clean_question(question)
        height, width = check_video_size(frames)
        regions = check_regions(regions or [], len(frames), width, height)
        num_frames = len(frames)
        if start_frame is None:
            start_frame = regions[0].frame if regions else 0
        orders = propagation_orders(num_frames, start_frame)
        cfg = model.cfg
        context = context_frame_indices(num_frames, cfg.sampling.num_context)
        cache = FrameEncoder(model, frames)
        t0 = time.perf_counter()
        with autocast_context(model.device, self.dtype):
            region_embeds = model.encode_regions(frames, regions)
            first = self._window(query_windows(orders[0], cfg.sampling.num_query, 1)[0].frames)
            embeds = cache.frame_tokens(context + first)
            ctx, qry = embeds[None, : len(context)], embeds[None, len(context):]
            if answer_text is None:
                generated = model.generate_answer(ctx, qry, question, max_new_tokens, region_embeds)
                answer_ids, parsed, prompts = generated.token_ids, generated.answer, generated.prompts
            else:
                answer_ids = model.tokenizer(answer_text, add_special_tokens=False).input_ids
                parsed = parse_answer(answer_ids, model.tokenizer)
                prompts = model.grounded_prompts(ctx, qry, question, region_embeds=[region_embeds],
                                                 answer_ids=[answer_ids]).prompts[0]
            t_answer = time.perf_counter() - t0
            grounded = parsed.grounded
            ids = [f"phrase_{k}" for k in range(len(grounded))]
            masks = np.zeros((len(grounded), num_frames, height, width), dtype=bool)
            scores = np.zeros((len(grounded), num_frames), dtype=np.float32)
            if grounded:
                slots = [p.seg_index for p in grounded]

                def window_prompts(window: list[int]) -> torch.Tensor:
                    if not refresh_prompts:
                        return prompts[slots]
                    emb = cache.frame_tokens(context + window)
                    return model.grounded_prompts(emb[None, : len(context)], emb[None, len(context):], question,
                                                  region_embeds=[region_embeds],
                                                  answer_ids=[answer_ids]).prompts[0][slots]

                self.banks = self._track(frames, context, cache, start_frame, masks, scores,
                                         _PerWindow(window_prompts, lambda out, _window, _frame: out), ids)
            else:
                self.banks = {}
        elapsed = time.perf_counter() - t0
        phrases = [GroundedPhrase(p.text, p.start, p.end, ids[k], masks[k], scores[k]) for k, p in enumerate(grounded)]
        return GroundedAnswer(parsed.text, phrases, start_frame, list(parsed.issues), parsed.marked(),
                              {"answer_s": t_answer, "total_s": elapsed})

    @torch.inference_mode()
    def segment_region(self, frames: Sequence[np.ndarray], frame_idx: int,
                       box: Region | Sequence[float], progress: Callable[[int], None] | None = None,
                       ) -> VideoSegmentation:
        """Track this: masks of the object in ``box`` (a Region, or x0, y0, x1, y1 pixels) on frame ``frame_idx``.

        The normal referring path with the question ``track <region>``: one [SEG] per query frame, one memory
        bank, forward from ``frame_idx`` and then backward from it.
        """
        model = self.model
        height, width = check_video_size(frames)
        if isinstance(box, Region):
            region = Region(box.x0, box.y0, box.x1, box.y1, frame_idx, box.kind)
        else:
            values = list(box)
            if len(values) != 4:
                raise ValueError(f"box must be (x0, y0, x1, y1) pixels, got {values!r}")
            region = Region(*(float(v) for v in values), frame=frame_idx)
        check_regions([region], len(frames), width, height)
        cfg = model.cfg
        num_frames = len(frames)
        context = context_frame_indices(num_frames, cfg.sampling.num_context)
        cache = FrameEncoder(model, frames)
        masks = np.zeros((1, num_frames, height, width), dtype=bool)
        scores = np.zeros((1, num_frames), dtype=np.float32)
        t0 = time.perf_counter()
        with autocast_context(model.device, self.dtype):
            region_embeds = model.encode_regions(frames, [region])

            def window_prompts(window: list[int]) -> torch.Tensor:  # (num_query, prompt_dim)
                emb = cache.frame_tokens(context + window)
                return model.grounded_prompts(emb[None, : len(context)], emb[None, len(context):],
                                              TRACK_REGION_QUESTION, region_embeds=[region_embeds]).prompts[0]

            def frame_prompt(out: torch.Tensor, window: list[int], frame: int) -> torch.Tensor:
                return out[window.index(frame)][None]  # the [SEG] of that query frame

            self.banks = self._track(frames, context, cache, frame_idx, masks, scores,
                                     _PerWindow(window_prompts, frame_prompt), ["region"], progress)
        elapsed = time.perf_counter() - t0
        return VideoSegmentation(masks[0], scores[0], frame_idx,
                                 {"total_s": elapsed, "per_frame_s": elapsed / num_frames})

    def _track(self, frames: Sequence[np.ndarray], context: list[int], cache: FrameEncoder,
               start_frame: int, masks: np.ndarray, scores: np.ndarray,
               prompts_for: _PerWindow, target_ids: list[str],
               progress: Callable[[int], None] | None = None) -> dict[str, MemoryBank | None]:
        """Decode every frame for K targets, each with its own memory bank; fills ``masks`` (K, T, H, W).

        ``prompts_for(window, frame)`` gives the (K, prompt_dim) prompts for ``frame`` of the query window
        (one MLLM pass per window at most: it remembers the last window's answer).
        Forward from ``start_frame``, then backward from its memory alone (as ``VideoSegmenter``).
        """
        model = self.model
        height, width = masks.shape[2:]
        num_query = model.cfg.sampling.num_query
        banks: list[MemoryBank | None] = [None] * len(target_ids)
        key_banks: list[MemoryBank | None] = [None] * len(target_ids)
        done: set[int] = set()
        for direction, order in enumerate(propagation_orders(len(frames), start_frame)):
            banks = [model.new_memory_bank() if direction == 0 else key_banks[k] for k in range(len(target_ids))]
            for window in query_windows(order, num_query, 1):
                todo = [f for f in window.decode if f not in done]
                if not todo:
                    continue
                query = self._window(window.frames)
                for frame_idx in todo:
                    prompts = prompts_for(query, frame_idx)
                    features = cache.sam_features(frame_idx)
                    for k, bank in enumerate(banks):
                        pred = model.track_step(features, prompts[k][None], bank)
                        logits = logits_to_frame(pred.logits, height, width)[0]
                        visible = float(torch.sigmoid(pred.object_score.float())[0, 0])
                        masks[k, frame_idx] = (logits > 0).cpu().numpy() if visible > 0.5 else False
                        scores[k, frame_idx] = visible
                        if frame_idx == start_frame and bank is not None:
                            key_banks[k] = bank.seed_from(bank.next_step - 1)  # seeds the backward pass
                    done.add(frame_idx)
                    if progress is not None:
                        progress(1)
                cache.keep_only(set(context) | set(window.frames))
        return dict(zip(target_ids, banks, strict=True))
