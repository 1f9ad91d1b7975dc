"""Training samples for the released GLUS weights: the official draw over a mix of datasets.

Each index picks a dataset by its ratio, then a video of it uniformly (as the official ``ReferVideoSegDataset``
does, whatever the index), then :func:`~glus_ros.training.release_batch.draw_release_sample`. Draws are seeded by
(seed, epoch, index), so a resumed run and every process count see the same samples.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from glus_ros.training.release_batch import NUM_CONTEXT, ReleaseSample, draw_release_sample
from glus_ros.training.release_step import same_object_table


class ReleaseClipDataset(Dataset[ReleaseSample]):
    """``length`` samples per epoch from ``sources``: (reader, ratio, dataset label) where the label is "mevis" for
    MeViS-layout data (the contrastive term reads only those) and the reader's name otherwise."""

    def __init__(self, sources: Sequence[tuple[Any, float, str]], length: int, seed: int = 0, num_query: int = 4,
                 max_expressions: int = 3) -> None:
        if not sources:
            raise ValueError("a release training mix needs at least one dataset")
        self.sources = list(sources)
        self.videos: list[list[str]] = []
        self._cumulative: list[float] = []
        total = 0.0
        need = max(NUM_CONTEXT, num_query)
        for reader, ratio, label in self.sources:
            with_expressions = {e.video for e in reader.expressions()}
            usable = [v for v in reader.videos() if v in with_expressions and len(reader.frames(v)) >= need]
            if not usable:
                raise ValueError(f"{label} data has no video with an expression and at least {need} frames: a release "
                                 "training sample shows 4 context and 4 query frames")
            self.videos.append(usable)
            total += float(ratio)
            self._cumulative.append(total)
        self.length = int(length)
        self.seed = seed
        self.epoch = 0
        self.num_query = num_query
        self.max_expressions = max_expressions

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        key = hashlib.sha256(f"release:{self.seed}:{self.epoch}:{index}".encode()).digest()
        return np.random.default_rng(int.from_bytes(key[:8], "little"))

    def __getitem__(self, index: int) -> ReleaseSample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = self._rng(index)
        k = min(bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1]), len(self.sources) - 1)
        reader, _ratio, label = self.sources[k]
        video = self.videos[k][int(rng.integers(len(self.videos[k])))]
        return draw_release_sample(reader, video, rng, num_query=self.num_query,
                                   max_expressions=self.max_expressions, dataset=label)

    def positive_table(self) -> dict[tuple[str, str], dict[str, set[str]]]:
        """The contrastive term's positives of every MeViS-kind video: other expressions with the same objects."""
        table: dict[tuple[str, str], dict[str, set[str]]] = {}
        for reader, _ratio, label in self.sources:
            if label != "mevis":
                continue
            rows: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {}
            for e in reader.expressions():
                rows.setdefault(e.video, []).append((e.video, e.exp_id, tuple(e.obj_ids)))
            for video, exps in rows.items():
                table[("mevis", video)] = same_object_table(exps)
        return table
