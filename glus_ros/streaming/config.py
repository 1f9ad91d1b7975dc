"""The streaming engine's settings: schedule, re-grounding rules, history, precision (checked on creation)."""

from __future__ import annotations

from dataclasses import dataclass

from glus_ros.sampling import StreamingSampler

SCHEDULES = ("full", "fast", "live")


@dataclass
class EngineConfig:
    # "full": MLLM on every frame, inline (paper); "fast": inline every `reground_every` frames; "live": the
    # tracker on every frame, the MLLM in its own worker (module docstring)
    schedule: str = "fast"
    reground_every: int = 8       # fast: frames between MLLM re-groundings; live: the most frames a prompt ages
    reground_below: float = 0.5   # fast, live: re-ground a target whose last visibility score fell below this
    history: int = 64             # frames kept for context sampling (bounded)
    max_targets: int = 8
    dtype: str = "fp32"           # "fp32" or "bf16" (autocast)
    answer_tokens: int = 64       # question targets: most tokens of the generated answer
    context_refresh: int = 1      # frames a choice of context frames is kept (> 1: prefix-cache hits)
    # where the context frames come from: "whole" evenly over the history, newest frame included; "older" the
    # history before the query window (the previous choice); sampling.StreamingSampler
    context_span: str = "whole"
    prefix_cache: bool = True     # reuse the context frames' LLM keys/values and motion field (inference)
    # live, CPU: the MLLM worker pauses between layers while the tracker works (off: measured on 2 cores with one
    # torch thread per loop, the loops run side by side without slowing the tracker, and a busy tracker starves a
    # yielding MLLM; benchmarks/tracker_speed.py)
    yield_to_tracker: bool = False
    cpu_threads: int = 0          # > 0: torch intra-op threads for the process (set when the engine is made)

    def __post_init__(self) -> None:
        if self.context_refresh < 1:
            raise ValueError(f"context_refresh must be >= 1, got {self.context_refresh}")
        if self.context_span not in StreamingSampler.SPANS:
            raise ValueError(f"unknown context_span '{self.context_span}' (one of {', '.join(StreamingSampler.SPANS)})")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0: leave torch's setting), got {self.cpu_threads}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}' (one of {', '.join(SCHEDULES)})")
        if self.reground_every < 1:
            raise ValueError(f"reground_every must be >= 1, got {self.reground_every}")
        if not 0.0 <= self.reground_below <= 1.0:
            raise ValueError(f"reground_below must be in [0, 1], got {self.reground_below}")
        if self.max_targets < 1:
            raise ValueError(f"max_targets must be >= 1, got {self.max_targets}")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"unknown dtype '{self.dtype}' (fp32 or bf16)")
        if self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {self.answer_tokens}")
