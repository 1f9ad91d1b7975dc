"""Bad-input bookkeeping for the tracker node: a count per kind, and log lines throttled per kind (ROS-free).

Why not rclpy's ``throttle_duration_sec``: rclpy throttles per *call site*, and the node reports every kind
of bad input (image, depth, camera_info, command, tf) from one place, so one throttle would hide a second
kind behind the first (a bad image silencing an empty command's error sent a second later). Here each kind
has its own window: the first error of a kind is always logged, later ones of the same kind at most once
per ``period_s``, and the line then says how many of that kind were not logged since.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

DEFAULT_PERIOD_S = 5.0


class InputErrorLog:
    """Counts rejected inputs per kind and decides which of them get a log line (one per kind per period)."""

    def __init__(self, period_s: float = DEFAULT_PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        if not period_s >= 0.0:
            raise ValueError(f"period_s must be >= 0, got {period_s}")
        self.period_s = period_s
        self.counts: Counter[str] = Counter()
        self.last_text = ""
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def record(self, kind: str, text: str) -> str | None:
        """Count one bad input of ``kind``; the line to log now, or None while this kind is throttled."""
        if not kind:
            raise ValueError("an input error needs a kind (image, depth, camera_info, command, ...)")
        self.counts[kind] += 1
        self.last_text = text
        now = self._clock()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.period_s:
            self._unlogged[kind] += 1
            return None
        self._last_logged[kind] = now
        skipped = self._unlogged.pop(kind, 0)
        note = f"; {skipped} more {kind} errors not logged" if skipped else ""
        return f"{text} [{kind}: {self.counts[kind]} so far{note}]"

    def total(self) -> int:
        return sum(self.counts.values())
