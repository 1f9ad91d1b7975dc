"""Live quality as a number: replay a referring-video split through the streaming engine, causally.

Each expression of each video is one target of a fresh engine; its frames are fed in order, so every mask
is computed from the frames up to it (the engine's context frames come from its own history, never from
the future), as on a robot. Two ways to feed them:

* ``rate_hz > 0``: a camera. Frames are submitted at that rate in wall time to the engine's worker;
  frames the tracker had no time for are dropped (latest frame wins). A dropped frame is scored with the
  newest earlier result's mask (what a robot holds at that moment; before any result: empty).
* ``rate_hz == 0``: no drops. Each frame goes through the tracker, then the replay waits until the
  grounding worker has nothing due (``StreamingEngine.wait_grounded``) before the next frame, so no frame
  and no MLLM pass is skipped and a re-grounding computed on frame t lands on frame t + 1, the earliest a
  live engine can use it. Deterministic for a given model and config.

Masks are written as ``<out>/<video>/<exp_id>/<frame>.png`` and scored by ``evaluation.evaluate_predictions``,
exactly as offline predictions. ``LiveStats`` says how many frames got a result, how many of those had a
grounded target (a mask from a prompt rather than "grounding", waiting for the first MLLM pass), and the
latency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glus_ros.model.glus import GLUSModel
from glus_ros.streaming.engine import EngineConfig, StreamingEngine
from glus_ros.streaming.types import FrameResult, StreamFrame, TargetSpec

# longest wait for the engine after the last frame (rate mode) or for one grounding (no-drop mode)
SETTLE_S = 30.0


@dataclass
class LiveReplay:
    """One expression replayed: the mask each frame is scored with and what the engine gave for it."""

    masks: np.ndarray              # (T, H, W) bool
    answered: np.ndarray           # (T,) a result for this very frame
    grounded: np.ndarray           # (T,) ... and the target had a prompt (not waiting for its first grounding)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class LiveStats:
    """Totals over a replayed split."""

    frames: int = 0
    answered: int = 0
    grounded: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    groundings: int = 0
    grounding_ms: list[float] = field(default_factory=list)

    def add(self, replay: LiveReplay, grounding_stats: dict[str, float]) -> None:
        self.frames += len(replay.answered)
        self.answered += int(replay.answered.sum())
        self.grounded += int(replay.grounded.sum())
        self.latencies_ms += replay.latencies_ms
        self.groundings += int(grounding_stats["groundings"])
        if grounding_stats["groundings"]:
            self.grounding_ms.append(float(grounding_stats["ms_mean"]))

    @property
    def answered_fraction(self) -> float:
        return self.answered / self.frames if self.frames else 0.0

    @property
    def grounded_fraction(self) -> float:
        return self.grounded / self.frames if self.frames else 0.0

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def replay_expression(model: GLUSModel, config: EngineConfig, frames: Sequence[np.ndarray], expression: str,
                      rate_hz: float = 0.0) -> tuple[LiveReplay, dict[str, float]]:
    """Track ``expression`` through ``frames`` with a fresh engine (one target; see the module docstring);
    returns the replay and the engine's ``grounding_stats``."""
    if not frames:
        raise ValueError("the video has no frames")
    if rate_hz < 0:
        raise ValueError(f"rate_hz must be >= 0 (0: no drops), got {rate_hz}")
    count = len(frames)
    height, width = frames[0].shape[:2]
    results: dict[int, FrameResult] = {}
    lock = threading.Lock()

    def collect(result: FrameResult) -> None:
        with lock:
            results[result.seq - 1] = result

    engine = StreamingEngine(model, config, on_result=collect)
    engine.add_target(TargetSpec("live", expression))
    try:
        if rate_hz == 0:
            for i, image in enumerate(frames):
                results[i] = engine.process(StreamFrame(image, stamp=i / 30.0, seq=i + 1))
                if i + 1 < count and not engine.wait_grounded(SETTLE_S):
                    raise RuntimeError(f"the grounding worker did not finish within {SETTLE_S:.0f} s")
        else:
            _feed_at_rate(engine, frames, rate_hz)
    finally:
        engine.stop()
    masks = np.zeros((count, height, width), dtype=bool)
    answered = np.zeros(count, dtype=bool)
    grounded = np.zeros(count, dtype=bool)
    latencies = []
    held = np.zeros((height, width), dtype=bool)
    for i in range(count):
        result = results.get(i)
        if result is not None:
            (out,) = result.targets
            held = out.mask
            answered[i] = True
            grounded[i] = out.grounded_seq is not None
            latencies.append(result.latency_ms)
        masks[i] = held
    return LiveReplay(masks, answered, grounded, latencies), engine.grounding_stats


def _feed_at_rate(engine: StreamingEngine, frames: Sequence[np.ndarray], rate_hz: float) -> None:
    """Submit the frames at ``rate_hz`` in wall time, then wait until the engine has taken the last one."""
    engine.start()
    period = 1.0 / rate_hz
    t0 = time.perf_counter()
    for i, image in enumerate(frames):
        time.sleep(max(0.0, t0 + i * period - time.perf_counter()))
        engine.submit(StreamFrame(image, stamp=i * period))
    deadline = time.perf_counter() + SETTLE_S
    while time.perf_counter() < deadline:
        s = engine.stats
        if s["frames_processed"] + s["frames_dropped"] + s["errors"] >= s["frames_in"]:
            break
        time.sleep(0.005)


def predict_dataset_live(model: GLUSModel, dataset, out_dir: Path, config: EngineConfig, rate_hz: float = 0.0,
                         progress: bool = True) -> LiveStats:
    """Masks of every expression of a MeViS-layout dataset, replayed live: ``<out>/<video>/<exp_id>/<frame>.png``."""
    from tqdm import tqdm

    from glus_ros.video_io import write_mask_png

    out_dir = Path(out_dir)
    stats = LiveStats()
    frames_cache: dict[str, list[np.ndarray]] = {}
    for expr in tqdm(dataset.expressions(), desc="live", unit="expr", disable=not progress):
        if expr.video not in frames_cache:
            frames_cache.clear()
            frames_cache[expr.video] = [dataset.load_frame(expr.video, f) for f in dataset.frames(expr.video)]
        replay, grounding = replay_expression(model, config, frames_cache[expr.video], expr.text, rate_hz)
        stats.add(replay, grounding)
        for name, mask in zip(dataset.frames(expr.video), replay.masks, strict=True):
            write_mask_png(out_dir / expr.video / str(expr.exp_id) / f"{name}.png", mask)
    return stats
