"""The tracker's health on ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, 1 Hz): rates, latency, drops, model.

:class:`HealthMonitor` is ROS-free: it keeps the engine's counters and the published results' latencies over
a sliding window and turns them into rates. :func:`tracker_status` decides the level and writes one
DiagnosticStatus, the way ``diagnostic_aggregator`` and ``rqt_robot_monitor`` read them:

* ERROR: the last lifecycle transition failed, or the engine raised on a frame within the window;
* WARN: active but no camera frame within the window, or more than half of the window's frames dropped;
* OK otherwise (also while inactive or unconfigured: a tracker switched off on purpose is healthy).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WINDOW_S = 5.0
DROP_WARN_FRACTION = 0.5


@dataclass
class HealthReport:
    """One window's numbers (rates in Hz over the window, latency in ms of results published in it)."""

    window_s: float
    input_hz: float
    processed_hz: float
    published_hz: float
    dropped_fraction: float          # of the frames that came in during the window
    latency_ms: dict[str, float | None]  # p50, p95, max
    errors_in_window: int
    totals: dict[str, int] = field(default_factory=dict)
    images_received: int = 0  # camera images the node's callbacks got since it started (a running total)
    image_age_ms: dict[str, float | None] = field(default_factory=lambda: {"p50": None, "p95": None})


class HealthMonitor:
    """Sliding-window rates of the engine's counters and latency percentiles of published results; also counts
    the camera images the node received and how old they were when its callback ran (stamp -> callback: the
    transport's and the executor's delay), so that a frame lost before the engine shows where it went."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._results: deque[tuple[float, float]] = deque()  # (time, latency ms) per published result
        self._ages: deque[tuple[float, float]] = deque()  # (time, age ms) per received image
        self.images_received = 0  # not reset: a running total, like the engine's counters

    def record_image(self, now: float, age_ms: float) -> None:
        """One camera image reached the node's callback ``age_ms`` after its stamp (executor thread)."""
        with self._lock:
            self.images_received += 1
            self._ages.append((now, float(age_ms)))
            self._trim(now)

    def record_result(self, now: float, latency_ms: float) -> None:
        """One published result (called from the engine's worker thread)."""
        with self._lock:
            self._results.append((now, float(latency_ms)))
            self._trim(now)

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()
            self._results.clear()
            self._ages.clear()

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._results and self._results[0][0] < horizon:
            self._results.popleft()
        while self._ages and self._ages[0][0] < horizon:
            self._ages.popleft()
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:  # keep one sample at or before it
            self._samples.popleft()

    def sample(self, now: float, stats: dict[str, int]) -> HealthReport:
        """Add the engine's counters at ``now`` (monotonic seconds) and report the window ending now."""
        with self._lock:
            self._samples.append((now, dict(stats)))
            self._trim(now)
            (t0, first), (t1, last) = self._samples[0], self._samples[-1]
            latencies = [lat for _, lat in self._results]
            ages = [age for _, age in self._ages]
            images_received = self.images_received
        span = t1 - t0

        def delta(key: str) -> int:
            return max(0, int(last.get(key, 0)) - int(first.get(key, 0)))

        def rate(count: int) -> float:
            return count / span if span > 0 else 0.0

        frames_in = delta("frames_in")
        percentiles: dict[str, float | None] = {"p50": None, "p95": None, "max": None}
        if latencies:
            values = np.asarray(latencies)
            percentiles = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                           "max": float(values.max())}
        return HealthReport(
            window_s=span, input_hz=rate(frames_in), processed_hz=rate(delta("frames_processed")),
            published_hz=len(latencies) / self.window_s if span > 0 else 0.0,
            dropped_fraction=delta("frames_dropped") / frames_in if frames_in else 0.0,
            latency_ms=percentiles, errors_in_window=delta("errors"), totals={k: int(v) for k, v in last.items()},
            images_received=images_received,
            image_age_ms={"p50": float(np.percentile(ages, 50)) if ages else None,
                          "p95": float(np.percentile(ages, 95)) if ages else None},
        )


def health_level(report: HealthReport, lifecycle_state: str, last_error: str) -> tuple[int, str]:
    """(level 0 OK / 1 WARN / 2 ERROR, one-line message) by the rules in the module docstring."""
    if last_error:
        return 2, f"{lifecycle_state}: {last_error}"
    if report.errors_in_window:
        return 2, f"{report.errors_in_window} frames failed in the last {report.window_s:.0f} s"
    if lifecycle_state != "active":
        return 0, {"inactive": "inactive (configured, not tracking)", "unconfigured": "unconfigured (no model)",
                   "finalized": "finalized"}.get(lifecycle_state, lifecycle_state)
    if report.window_s == 0:
        return 0, "active (first sample: no rates yet)"
    if report.input_hz == 0.0:
        return 1, f"active, but no camera frame in the last {report.window_s:.0f} s"
    if report.dropped_fraction > DROP_WARN_FRACTION:
        return 1, f"dropping {report.dropped_fraction:.0%} of the frames (the model is slower than the camera)"
    return 0, f"tracking at {report.processed_hz:.1f} Hz"


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def tracker_status(name: str, hardware_id: str, report: HealthReport, lifecycle_state: str, last_error: str,
                   extra: dict[str, Any]) -> Any:
    """A diagnostic_msgs/DiagnosticStatus: level and message from :func:`health_level`, the window's numbers,
    the totals and ``extra`` (model state, targets, backends...) as key/value strings."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    level, message = health_level(report, lifecycle_state, last_error)
    values: dict[str, Any] = {
        "lifecycle_state": lifecycle_state,
        "input_rate_hz": report.input_hz,
        "processed_rate_hz": report.processed_hz,
        "published_rate_hz": report.published_hz,
        "latency_p50_ms": report.latency_ms["p50"],
        "latency_p95_ms": report.latency_ms["p95"],
        "latency_max_ms": report.latency_ms["max"],
        "dropped_fraction": report.dropped_fraction,
        "window_s": report.window_s,
        "image_age_p50_ms": report.image_age_ms["p50"],
        "image_age_p95_ms": report.image_age_ms["p95"],
        "images_received": report.images_received,
        **{key: report.totals.get(key, 0) for key in ("frames_in", "frames_processed", "frames_dropped", "errors")},
        **extra,
    }
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=_value(v)) for k, v in values.items()])
