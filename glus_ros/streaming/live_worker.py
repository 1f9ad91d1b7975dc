"""The live schedule's second loop: a worker thread that re-grounds due targets on a snapshot of the newest window
while the tracker goes on with every frame; its results wait in the targets for the tracker's next frame.

A mixin of :class:`~glus_ros.streaming.engine.StreamingEngine` (it calls the engine's ``_due_live``,
``_snapshot`` and ``_compute_groundings`` and uses its locks and target table).
"""

from __future__ import annotations

import logging
import threading
import time

import torch

from glus_ros.devices import autocast_context
from glus_ros.streaming.priority import yield_between_layers
from glus_ros.streaming.tracks import Grounding, TargetTrack

log = logging.getLogger(__name__)


class LiveGroundingWorker:
    """The grounding worker of the live schedule (mixin of the streaming engine; see the module doc)."""

    @property
    def grounding_stats(self) -> dict[str, float]:
        """MLLM passes: ``groundings`` (passes), ``targets_grounded``, ``ms_mean`` / ``ms_last`` (wall time of a
        pass, in the worker for "live"), ``in_flight`` (targets being grounded now), ``errors`` (failed passes)
        and the prefix cache's ``prefix_hits`` / ``prefix_misses``."""
        with self._ground_cond:
            s = dict(self._grounding_stats)
        with self._targets_lock:
            s["in_flight"] = sum(t.in_flight for t in self._targets.values())
        s["ms_mean"] = s.pop("ms_total") / s["groundings"] if s["groundings"] else 0.0
        cache = self._prefix_cache
        s["prefix_hits"] = cache.hits if cache is not None else 0
        s["prefix_misses"] = cache.misses if cache is not None else 0
        return s

    def wait_grounded(self, timeout_s: float = 30.0) -> bool:
        """Live schedule: block until no target is being grounded or due for grounding (a result waiting for
        the next frame counts as done); True when that happened within ``timeout_s``. For replays that must
        not skip an MLLM pass (``glus-ros eval --live`` without drops); a camera never waits. Other
        schedules: True at once."""
        if not self.live:
            return True
        self._start_grounder()
        self._wake_grounder()
        deadline = time.perf_counter() + timeout_s
        with self._ground_cond:
            while True:
                with self._targets_lock:
                    newest = self._step - 1
                    busy = any(t.in_flight or self._due_live(t, newest) for t in self._targets.values())
                if not busy or self._step == 0:
                    return True
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self._ground_cond.wait(min(left, 0.05))

    def _start_grounder(self) -> None:
        with self._ground_cond:
            if self._grounder is not None and self._grounder.is_alive():
                return
            self._grounder_stop = threading.Event()
            self._grounder = threading.Thread(target=self._grounder_loop, args=(self._grounder_stop,),
                                              name="glus-grounding-worker", daemon=True)
            self._grounder.start()

    def _stop_grounder(self) -> threading.Thread | None:
        with self._ground_cond:
            self._grounder_stop.set()
            grounder, self._grounder = self._grounder, None
            self._ground_cond.notify_all()
        return grounder

    def _wake_grounder(self) -> None:
        with self._ground_cond:
            self._ground_wanted = True
            self._ground_cond.notify_all()

    def _grounder_loop(self, stop: threading.Event) -> None:
        hooks = []
        if self.config.yield_to_tracker and self.model.device.type == "cpu":  # on a GPU the loops do not compete
            hooks = yield_between_layers(self.model.vlm, self._priority, threading.current_thread())
        try:
            while True:
                with self._ground_cond:
                    while not self._ground_wanted and not stop.is_set():
                        self._ground_cond.wait()
                    if stop.is_set():
                        return
                    self._ground_wanted = False
                self._ground_once(stop)
        finally:
            for hook in hooks:
                hook.remove()

    def _ground_once(self, stop: threading.Event) -> None:
        """Ground every due target on a snapshot of the newest window; the results wait for the tracker."""
        with self._model_lock:
            if self._step == 0:
                return
            with self._targets_lock:
                newest = self._step - 1
                due = [t for t in self._targets.values() if self._due_live(t, newest)]
                for target in due:
                    target.in_flight = True
            if not due:
                with self._ground_cond:
                    self._ground_cond.notify_all()  # wait_grounded: nothing left
                return
            window = self._snapshot()
        start = time.perf_counter()
        results: list[tuple[TargetTrack, Grounding]] = []
        try:
            with torch.inference_mode(), autocast_context(self.model.device, self.config.dtype):
                results = self._compute_groundings(window, due)
        except Exception:
            log.exception("grounding worker failed on the window of frame seq %d; retrying on a later frame",
                          window.seq)
            with self._ground_cond:
                self._grounding_stats["errors"] += 1
            with self._cond:
                self._stats["errors"] += 1
            stop.wait(0.05)  # no busy loop on a persistent fault
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        with self._targets_lock:
            for target, grounding in results:
                if self._targets.get(target.spec.target_id) is target:  # not removed or replaced meanwhile
                    target.pending = grounding
            for target in due:
                target.in_flight = False
        if results:
            self._count_grounding(len(results), elapsed_ms)
        with self._ground_cond:
            self._ground_wanted = True  # look again: more may be due (e.g. added meanwhile)
            self._ground_cond.notify_all()

    def _count_grounding(self, targets: int, elapsed_ms: float) -> None:
        with self._ground_cond:
            self._grounding_stats["groundings"] += 1
            self._grounding_stats["targets_grounded"] += targets
            self._grounding_stats["ms_total"] += elapsed_ms
            self._grounding_stats["ms_last"] = elapsed_ms
