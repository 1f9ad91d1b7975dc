"""Approximate-time matching of several timestamped streams (e.g. colour + depth), ROS-free.

Why our own: ``message_filters`` is not on PyPI for these wheels, and the tracker needs drop counts.
Each input keeps a bounded queue sorted by stamp, and sets are emitted oldest first. Heads older than
another input's head by more than ``slop`` can never be matched and are dropped; the remaining heads
form a valid set, which is tightened by advancing an input to its next queued item while that lowers
the spread (best match). The set is emitted once no later arrival could tighten it: its spread is zero,
or each input holding its oldest stamp already has a newer item queued (arrivals per input are assumed
to come roughly in order; out-of-order ones are sorted in). Items that can never be matched (too old,
skipped for a better one, queue overflow) are dropped and counted per input. A stamp more than
``jump_back_s`` older than what its input last contributed means time restarted (a looping bag, a
restarted simulation): the queues are reset instead of dropping every later item as stale.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Match:
    """One synchronised set: ``stamps[i]``/``items[i]`` belong to input ``names[i]``."""

    names: tuple[str, ...]
    stamps: tuple[float, ...]
    items: tuple[Any, ...]

    @property
    def spread(self) -> float:
        return max(self.stamps) - min(self.stamps)

    def item(self, name: str) -> Any:
        return self.items[self.names.index(name)]


@dataclass
class SyncStats:
    """Counts per input name: received items, items dropped without being matched; emitted sets."""

    received: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    emitted: int = 0


class ApproximateTimeSync:
    """Thread-safe approximate-time synchroniser over named inputs; :meth:`push` returns ready matches."""

    def __init__(self, names: Sequence[str], slop_s: float, queue_size: int = 10, jump_back_s: float = 1.0) -> None:
        names = tuple(names)
        if len(names) < 2:
            raise ValueError(f"ApproximateTimeSync needs at least two inputs, got {list(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"ApproximateTimeSync input names must be unique, got {list(names)}")
        if not slop_s >= 0:  # also rejects NaN
            raise ValueError(f"slop must be a non-negative number of seconds, got {slop_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not jump_back_s > 0:
            raise ValueError(f"jump_back_s must be a positive number of seconds, got {jump_back_s}")
        self.jump_back_s = float(jump_back_s)
        self.names = names
        self.slop_s = float(slop_s)
        self.queue_size = int(queue_size)
        self._queues: dict[str, list[tuple[float, int, Any]]] = {n: [] for n in names}
        self._last_emitted: dict[str, float] = {}
        self._counter = itertools.count()  # tie-breaker so equal stamps never compare items
        self._lock = threading.Lock()
        self._stats = SyncStats({n: 0 for n in names}, {n: 0 for n in names}, 0)

    @property
    def stats(self) -> SyncStats:
        with self._lock:
            return SyncStats(dict(self._stats.received), dict(self._stats.dropped), self._stats.emitted)

    def queued(self, name: str) -> list[float]:
        """Stamps currently waiting on input ``name`` (oldest first)."""
        with self._lock:
            return [s for s, _, _ in self._queue(name)]

    def reset(self) -> None:
        """Drop everything queued (counted as dropped) and accept any stamp again."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        for name, queue in self._queues.items():
            self._stats.dropped[name] += len(queue)
            queue.clear()
        self._last_emitted.clear()

    def push(self, name: str, stamp: float, item: Any) -> list[Match]:
        """Add ``item`` stamped ``stamp`` (seconds) on input ``name``; return the sets it completed, oldest first."""
        stamp = float(stamp)
        if stamp != stamp:  # NaN never matches anything
            raise ValueError(f"stamp of input {name!r} is NaN")
        with self._lock:
            queue = self._queue(name)
            self._stats.received[name] += 1
            last = self._last_emitted.get(name)
            if last is not None and stamp < last - self.jump_back_s:
                self._reset_locked()  # time went backwards (bag replay looped, simulation restarted)
            elif last is not None and stamp <= last:
                self._stats.dropped[name] += 1  # older than what this input already contributed
                return []
            bisect.insort(queue, (stamp, next(self._counter), item))
            if len(queue) > self.queue_size:
                del queue[0]
                self._stats.dropped[name] += 1
            matches = []
            while True:
                match = self._ready_match()
                if match is None:
                    return matches
                matches.append(match)

    def _queue(self, name: str) -> list[tuple[float, int, Any]]:
        try:
            return self._queues[name]
        except KeyError:
            raise ValueError(f"unknown sync input {name!r}; inputs are {list(self.names)}") from None

    def _prune(self) -> bool:
        """Drop heads no future set can use (older than another input's head by more than slop).

        Afterwards the heads of all queues lie within slop of each other. Returns False if a queue is empty.
        """
        while True:
            if any(not q for q in self._queues.values()):
                return False
            horizon = max(q[0][0] for q in self._queues.values()) - self.slop_s
            stale = [n for n, q in self._queues.items() if q[0][0] < horizon]
            if not stale:
                return True
            for name in stale:
                del self._queues[name][0]
                self._stats.dropped[name] += 1

    def _ready_match(self) -> Match | None:
        if not self._prune():
            return None
        queues = [self._queues[n] for n in self.names]

        def spread(stamps: list[float]) -> float:
            return max(stamps) - min(stamps)

        heads = [q[0][0] for q in queues]
        while True:  # advance an input to its next item while that tightens the set
            best_i, best_spread = -1, spread(heads)
            for i, q in enumerate(queues):
                if len(q) > 1:
                    candidate = spread([*heads[:i], q[1][0], *heads[i + 1:]])
                    if candidate < best_spread:
                        best_i, best_spread = i, candidate
            if best_i < 0:
                break
            del queues[best_i][0]
            self._stats.dropped[self.names[best_i]] += 1
            heads[best_i] = queues[best_i][0][0]
        oldest = min(heads)
        # Only a later item of an input holding the oldest stamp could still tighten the set; with that
        # input's next item already queued (and not better), later ones are not better either.
        settled = spread(heads) == 0.0 or all(len(q) > 1 for q, h in zip(queues, heads, strict=True) if h == oldest)
        if not settled:
            return None
        stamps, items = [], []
        for name, queue in zip(self.names, queues, strict=True):
            stamp, _, item = queue.pop(0)
            stamps.append(stamp)
            items.append(item)
            self._last_emitted[name] = stamp
        self._stats.emitted += 1
        return Match(self.names, tuple(stamps), tuple(items))
