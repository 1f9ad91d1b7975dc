"""Which frames the model sees: sparse context frames (global) and query windows (local).

Pure functions over frame indices, shared by offline segmentation, training and the live stream.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

import numpy as np


def segment_bounds(num_frames: int, num_segments: int) -> list[tuple[int, int]]:
    """Split ``range(num_frames)`` into ``num_segments`` near-equal [start, end) segments."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"need at least one segment, got {num_segments}")
    edges = [round(i * num_frames / num_segments) for i in range(num_segments + 1)]
    return [(edges[i], max(edges[i + 1], edges[i] + 1)) for i in range(num_segments)]


def context_frame_indices(num_frames: int, num_context: int = 4) -> list[int]:
    """Inference: the middle frame of each of ``num_context`` equal segments (GLUS Sec. 4.1).

    The set stays the same for the whole video. Videos shorter than ``num_context`` repeat frames.
    """
    if num_context == 0:
        return []
    return [min((start + end - 1) // 2, num_frames - 1) for start, end in segment_bounds(num_frames, num_context)]


def official_context_frames(num_frames: int, num_context: int = 4) -> list[int]:
    """Context frames of the official GLUS inference: ``min(start_j + ceil(N / C) // 2, end_j - 1)`` per segment.

    The segments are ``np.linspace(0, N, C + 1).astype(int)``. For N < C a segment can be empty; the official
    code then indexes frame -1, the last one, and so does this.
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    edges = np.linspace(0, num_frames, num_context + 1, dtype=int)
    shift = math.ceil(num_frames / num_context) // 2
    picks = [min(int(edges[j]) + shift, int(edges[j + 1]) - 1) for j in range(num_context)]
    return [p % num_frames for p in picks]


def span_indices(num_frames: int, count: int) -> list[int]:
    """``count`` indices evenly from 0 to ``num_frames - 1``, both ends included (one: the newest)."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if count < 2:
        return [num_frames - 1] * count
    return [round(i * (num_frames - 1) / (count - 1)) for i in range(count)]


def sample_context_frames(num_frames: int, num_context: int, rng: random.Random) -> list[int]:
    """Training: one random frame from each equal segment."""
    if num_context == 0:
        return []
    return [min(rng.randrange(start, end), num_frames - 1) for start, end in segment_bounds(num_frames, num_context)]


def sample_query_clip(num_frames: int, num_query: int, rng: random.Random) -> list[int]:
    """Training: a random run of ``num_query`` consecutive frames (clamped for short videos)."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    start = rng.randrange(0, max(num_frames - num_query, 0) + 1)
    return [min(start + i, num_frames - 1) for i in range(num_query)]


@dataclass(frozen=True)
class QueryWindow:
    """A window of consecutive query frames and which of them get a new mask from it."""

    frames: tuple[int, ...]      # in processing order
    decode: tuple[int, ...]      # the subset of ``frames`` whose masks this window produces


def query_windows(order: list[int], size: int = 4, stride: int = 1) -> list[QueryWindow]:
    """Sliding windows over frames in processing ``order`` (forward or backward).

    The first window decodes all its frames; each later window ends at the next ``stride`` new
    frames and decodes only those, so every frame gets exactly one mask and the window's earlier
    frames are the local context whose masks are already in the memory bank (GLUS supp. Sec. B).
    """
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be >= 1, got {size}, {stride}")
    if stride > size:
        raise ValueError(f"stride {stride} larger than window {size} would skip frames")
    if not order:
        return []
    first = min(size, len(order))
    windows = [QueryWindow(tuple(order[:first]), tuple(order[:first]))]
    pos = first
    while pos < len(order):
        end = min(pos + stride, len(order))
        frames = tuple(order[max(0, end - size):end])
        windows.append(QueryWindow(frames, tuple(order[pos:end])))
        pos = end
    return windows


def propagation_orders(num_frames: int, start: int = 0) -> list[list[int]]:
    """Processing orders from a start (key) frame: forward to the end, then backward to frame 0."""
    if not 0 <= start < num_frames:
        raise ValueError(f"start frame {start} outside the video of {num_frames} frames")
    orders = [list(range(start, num_frames))]
    if start > 0:
        orders.append(list(range(start, -1, -1)))
    return orders


class StreamingSampler:
    """Context and query frames for a live stream with a bounded history.

    Keeps the ids of the last ``history`` frames; the query window is the newest ``num_query`` of
    them. Where the context frames come from (``span``):

    * ``"older"``: the middles of ``num_context`` equal segments of the part of the history older than
      the query window (the whole history while it is shorter than that);
    * ``"whole"``: evenly from the oldest frame of the history to the newest, both included: the causal
      analogue of the offline context (spread over all of the video there is), whose time span a motion
      field reads. Measured on the synthetic validation split (seed 1001; first 8 videos, the causal
      ``full`` schedule): J&F 0.725 against 0.690 with ``"older"`` (offline: 0.774).
    * ``"official"``: the official GLUS inference's rule (``official_context_frames``) over the whole history, as
      if the stream so far were the video: what the released weights were run with.

    ``context_refresh`` > 1 keeps a choice of context frames for that many new frames (and until the
    history has doubled since, while it fills), so that consecutive MLLM passes share their context and
    its cached LLM prefix (``model/prefix_cache.py``); a kept context frame may already have left the
    history (callers keep its data while :meth:`context_frames` names it). 1 chooses anew on every frame.
    """

    SPANS = ("older", "whole", "official")

    def __init__(self, history: int = 64, num_context: int = 4, num_query: int = 4, context_refresh: int = 1,
                 span: str = "older") -> None:
        if span not in self.SPANS:
            raise ValueError(f"unknown context span {span!r} (one of {', '.join(self.SPANS)})")
        if history < num_query:
            raise ValueError(f"history {history} must hold at least the {num_query} query frames")
        if context_refresh < 1:
            raise ValueError(f"context_refresh must be >= 1 frame, got {context_refresh}")
        self.history = history
        self.num_context = num_context
        self.num_query = num_query
        self.context_refresh = context_refresh
        self.span = span
        self._ids: deque[int] = deque(maxlen=history)
        self._pushes = 0
        self._context: list[int] | None = None
        self._chosen_at = (0, 0)  # (pushes, history length) when the kept context was chosen

    def push(self, frame_id: int) -> None:
        if self._ids and frame_id <= self._ids[-1]:
            raise ValueError(f"frame ids must increase: got {frame_id} after {self._ids[-1]}")
        self._ids.append(frame_id)
        self._pushes += 1

    def __len__(self) -> int:
        return len(self._ids)

    def buffered(self) -> list[int]:
        return list(self._ids)

    def query_frames(self) -> list[int]:
        return list(self._ids)[-self.num_query:]

    def context_frames(self) -> list[int]:
        """Spread over the history as ``span`` says (class docstring); kept ``context_refresh`` frames."""
        ids = list(self._ids)
        if not ids or self.num_context == 0:
            return []
        pushes, length = self._chosen_at
        if self._context is None or self._pushes - pushes >= self.context_refresh or len(ids) >= 2 * length:
            if self.span == "whole":
                self._context = [ids[i] for i in span_indices(len(ids), self.num_context)]
            elif self.span == "official":  # the released weights' rule, over the stream so far as the video
                self._context = [ids[i] for i in official_context_frames(len(ids), self.num_context)]
            else:
                older = ids[: -self.num_query] or ids
                self._context = [older[i] for i in context_frame_indices(len(older), self.num_context)]
            self._chosen_at = (self._pushes, len(ids))
        return list(self._context)
