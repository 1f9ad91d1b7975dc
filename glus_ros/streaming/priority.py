"""The tracker goes first: the MLLM worker pauses between its layers while the tracker works on a frame.

On a CPU both loops share the same cores and Python's interpreter lock, so an MLLM pass running beside
the tracker slows every tracker frame it overlaps. :class:`TrackerPriority` lets the MLLM run only in the
tracker's idle time: the tracker marks each frame it works on (:meth:`TrackerPriority.busy`), and forward
pre-hooks on the MLLM's transformer layers (:func:`yield_between_layers`) wait, in the MLLM worker's
thread only, until the tracker is idle again (at most ``max_wait_s`` per layer, so a tracker that is never
idle still lets the MLLM make progress). A re-grounding then takes longer in wall time; the tracker's rate
does not drop. On a GPU, where the two loops do not compete for the same units, it is not used. Measured
on 2 cores (``benchmarks/tracker_speed.py``): with one torch thread per loop the loops run side by side
without slowing the tracker, and a tracker busy most of each frame period starves a yielding MLLM, so the
engine leaves it off by default (``EngineConfig.yield_to_tracker``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from torch import nn

# the transformer blocks of the vision tower and the LLM (transformers' CLIP / Llama / Qwen... layers)
_LAYER_SUFFIXES = ("DecoderLayer", "EncoderLayer")


class TrackerPriority:
    """Whether the tracker is busy with a frame, and a wait for it to be idle."""

    def __init__(self, max_wait_s: float = 0.1) -> None:
        if max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0, got {max_wait_s}")
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._busy = 0
        self.waited_s = 0.0  # total time the MLLM worker spent waiting (monitoring)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                if not self._busy:
                    self._cond.notify_all()

    def wait_idle(self) -> None:
        start = time.perf_counter()
        deadline = start + self.max_wait_s
        with self._cond:
            while self._busy and (left := deadline - time.perf_counter()) > 0:
                self._cond.wait(left)
        self.waited_s += time.perf_counter() - start


def yield_between_layers(module: nn.Module, priority: TrackerPriority, thread: threading.Thread) -> list:
    """Hooks that make ``thread`` wait for the tracker before each transformer layer of ``module``; returns the
    hook handles (``handle.remove()`` undoes them). Other threads pass the hooks without waiting."""

    def hook(_module: nn.Module, _args: object) -> None:
        if threading.current_thread() is thread:
            priority.wait_idle()

    return [m.register_forward_pre_hook(hook) for m in module.modules()
            if type(m).__name__.endswith(_LAYER_SUFFIXES)]
