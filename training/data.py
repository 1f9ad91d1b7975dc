"""Training samples for GLUS: context frames, a query clip, its masks and the contrastive object key.

A sample is drawn the way the paper trains (Sec. 4.1): ``num_context`` context frames, one random frame
from each equal segment of the video (global view), and ``num_query`` consecutive query frames (local
view) whose ground-truth masks supervise SAM 2. Every draw is a pure function of (seed, epoch, index),
so a run can be repeated and a failing sample found again.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from glus_ros.data.grounding import GroundingData, load_grounding, phrase_expressions
from glus_ros.datasets.mevis import Expression, MevisDataset
from glus_ros.model.region import TRACK_REGION_QUESTION, WHAT_REGION_QUESTION, Region
from glus_ros.model.transforms import clip_input, sam_input, to_tensor
from glus_ros.sampling import sample_context_frames, sample_query_clip

log = logging.getLogger(__name__)

# errors that mean "this sample's files are missing or corrupt" (the readers raise these naming the file);
# anything else is a bug and always propagates
_DATA_ERRORS = (OSError, ValueError)


class VideoReader(Protocol):
    """What a dataset reader (MeViS, Ref-YouTube-VOS, synthetic) offers to the training data."""

    def expressions(self) -> list[Expression]: ...
    def frames(self, video: str) -> list[str]: ...
    def load_frame(self, video: str, frame: str) -> np.ndarray: ...
    def gt_masks(self, expression: Expression) -> np.ndarray: ...


@dataclass
class ClipSample:
    """One training example: what the MLLM sees, what SAM 2 segments and what the losses compare."""

    expression: str
    context: list[np.ndarray]        # num_context (H, W, 3) uint8 frames
    query: list[np.ndarray]          # num_query (H, W, 3) uint8 consecutive frames
    query_masks: np.ndarray          # (Nq, H, W) bool ground truth of the query frames
    object_key: int                  # same key = same object set of the same video (contrastive positives)
    dataset: str
    video: str
    context_idx: list[int] = field(default_factory=list)
    query_idx: list[int] = field(default_factory=list)
    attributes: tuple[int, int] = (-100, -100)  # colour, shape class of the target (auxiliary; -100 unknown)
    # per query frame: one normalised (x, y) point per visible referred object (point supervision), or None
    query_points: list[list[tuple[float, float]]] | None = None
    # (Nc + Nq, G, G, 2) colour / shape class of the object in each token cell of each frame (auxiliary), or None
    cell_labels: np.ndarray | None = None
    # (Nq, G, G) {0, 1} cells of the reference object of a relation expression per query frame (all zero
    # without one), or None
    reference_cells: np.ndarray | None = None
    # (G, G, 2 * (Nc - 1) + 1) per-cell moves between the context frames and their weights (motion field), or None
    motion_cells: np.ndarray | None = None


class ObjectKeyRegistry:
    """Integer ids for referred object sets, shared by all datasets so keys never collide across them.

    Two expressions of one video naming the same objects get the same key: they are positives of each
    other in the contrastive loss, everything else is a negative.
    """

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, tuple[int, ...]], int] = {}

    def key(self, dataset: str, video: str, obj_ids: Sequence[int]) -> int:
        """The key of an object set, assigned in first-seen order."""
        ident = (dataset, video, tuple(sorted(int(o) for o in obj_ids)))
        if ident not in self._keys:
            self._keys[ident] = len(self._keys)
        return self._keys[ident]

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, ident: object) -> bool:
        return ident in self._keys


class ReferringClipDataset(Dataset[ClipSample]):
    """Clip samples over every expression of one reader; index ``i`` is expression ``i``."""

    def __init__(
        self,
        reader: VideoReader,
        name: str,
        num_context: int = 4,
        num_query: int = 4,
        seed: int = 0,
        on_error: Literal["skip", "raise"] = "skip",
        registry: ObjectKeyRegistry | None = None,
        mask_cache_size: int = 4,
        attribute_labels: Sequence[tuple[int, int]] | None = None,
        object_points: bool = False,
        cell_labels: Callable[[str, list[int]], np.ndarray] | None = None,
        reference_cells: Callable[[Expression, list[int]], np.ndarray] | None = None,
        motion_cells: Callable[[str, list[int]], np.ndarray] | None = None,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if num_context < 0:
            raise ValueError(f"num_context must be >= 0, got {num_context}")
        if num_query < 1:
            raise ValueError(f"num_query must be >= 1, got {num_query}")
        if mask_cache_size < 0:
            raise ValueError(f"mask_cache_size must be >= 0, got {mask_cache_size}")
        self.reader = reader
        self.name = name
        self.num_context = num_context
        self.num_query = num_query
        self.seed = seed
        self.on_error = on_error
        self.registry = registry if registry is not None else ObjectKeyRegistry()
        self.epoch = 0
        self._expressions = reader.expressions()
        if not self._expressions:
            raise ValueError(f"dataset {name!r} has no expressions to train on")
        if attribute_labels is not None and len(attribute_labels) != len(self._expressions):
            raise ValueError(f"{len(attribute_labels)} attribute labels for {len(self._expressions)} expressions")
        self._attributes = list(attribute_labels) if attribute_labels is not None else None
        self.object_points = object_points  # per-object point labels (deepest interior point of each object)
        self.cell_labels = cell_labels      # (video, frame indices) -> (F, G, G, 2) per-cell classes
        self.reference_cells = reference_cells  # (expression, frame indices) -> (F, G, G) reference cells
        self.motion_cells = motion_cells    # (video, context frame indices) -> (G, G, C) per-cell moves
        # keys are registered up front so they do not depend on which samples a worker happens to load
        self._keys = [self.registry.key(name, e.video, e.obj_ids) for e in self._expressions]
        self._by_key: dict[int, list[int]] = {}
        for i, key in enumerate(self._keys):
            self._by_key.setdefault(key, []).append(i)
        # samples skipped in this process (DataLoader workers each count their own)
        self.skipped = 0
        self.skip_reasons: Counter[str] = Counter()  # error message (names the file) -> count
        self._mask_cache_size = mask_cache_size
        self._mask_cache: OrderedDict[tuple[str, tuple[int, ...], tuple[str, ...] | None], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expressions)

    def set_epoch(self, epoch: int) -> None:
        """Change the frames drawn for every index (call once per epoch, like a DistributedSampler)."""
        self.epoch = epoch

    def object_key(self, index: int) -> int:
        return self._keys[index]

    def positives(self, index: int) -> list[int]:
        """The other expressions of sample ``index``'s object set (contrastive positives)."""
        return [j for j in self._by_key[self._keys[index]] if j != index]

    def _rng(self, index: int) -> random.Random:
        # string seeds hash with SHA-512: the same in every process, unlike hash() of a tuple of strings
        return random.Random(f"{self.seed}:{self.epoch}:{index}")

    def __getitem__(self, index: int) -> ClipSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset {self.name!r} of {n} samples")
        index %= n
        if self.on_error == "raise":
            return self._load(index)
        last: Exception | None = None
        for offset in range(n):
            j = (index + offset) % n
            try:
                return self._load(j)
            except _DATA_ERRORS as exc:
                last = exc
                self.skipped += 1
                self.skip_reasons[str(exc)] += 1
                log.warning("skipping sample %d of %s: %s", j, self.name, exc)
        raise RuntimeError(f"every one of the {n} samples of dataset {self.name!r} failed to load; last error: {last}")

    def _masks(self, expression: Expression) -> np.ndarray:
        """The expression's (T, H, W) ground truth, kept for the few most recent object sets only."""
        key = (expression.video, tuple(sorted(expression.obj_ids)), expression.anno_ids)
        if key in self._mask_cache:
            self._mask_cache.move_to_end(key)
            return self._mask_cache[key]
        masks = self.reader.gt_masks(expression)
        if self._mask_cache_size > 0:
            self._mask_cache[key] = masks
            while len(self._mask_cache) > self._mask_cache_size:
                self._mask_cache.popitem(last=False)
        return masks

    def _frame_name(self, video: str, frame: str) -> str:
        path_of: Callable[[str, str], Path] | None = getattr(self.reader, "frame_path", None)
        return str(path_of(video, frame)) if path_of is not None else f"{video}/{frame}"

    def _load(self, index: int) -> ClipSample:
        exp = self._expressions[index]
        names = self.reader.frames(exp.video)
        rng = self._rng(index)
        context_idx = sample_context_frames(len(names), self.num_context, rng)
        query_idx = sample_query_clip(len(names), self.num_query, rng)
        masks = self._masks(exp)
        if masks.ndim != 3 or masks.shape[0] != len(names):
            raise ValueError(
                f"ground truth of expression {exp.exp_id!r} (video {exp.video!r}, dataset {self.name!r}) has "
                f"shape {masks.shape}, expected one mask per each of the {len(names)} frames"
            )
        size = masks.shape[1:]
        loaded: dict[int, np.ndarray] = {}
        for t in dict.fromkeys(context_idx + query_idx):
            frame = self.reader.load_frame(exp.video, names[t])
            if frame.shape[:2] != size:
                raise ValueError(
                    f"frame {self._frame_name(exp.video, names[t])} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"its ground truth masks are {size[1]}x{size[0]}"
                )
            loaded[t] = frame
        return ClipSample(
            expression=exp.text,
            context=[loaded[t] for t in context_idx],
            query=[loaded[t] for t in query_idx],
            query_masks=np.ascontiguousarray(masks[query_idx], dtype=bool),
            object_key=self._keys[index],
            dataset=self.name,
            video=exp.video,
            context_idx=context_idx,
            query_idx=query_idx,
            attributes=self._attributes[index] if self._attributes is not None else (-100, -100),
            query_points=self._query_points(exp, query_idx) if self.object_points else None,
            cell_labels=self.cell_labels(exp.video, context_idx + query_idx) if self.cell_labels else None,
            reference_cells=self.reference_cells(exp, query_idx) if self.reference_cells else None,
            motion_cells=self.motion_cells(exp.video, context_idx) if self.motion_cells else None,
        )

    def _query_points(self, exp: Expression, query_idx: list[int]) -> list[list[tuple[float, float]]]:
        """One point per visible referred object in each query frame (VideoMolmo labels without SAM 2)."""
        from glus_ros.points.evaluation import object_masks
        from glus_ros.points.labels import object_point_labels

        tracks = object_masks(self.reader, exp)   # (N, T, H, W) one track per referred object
        return [list(object_point_labels(tracks[:, t], normalised=True)) for t in query_idx]


class GivenExpressions:
    """A reader with other expressions (e.g. counting questions) over the same videos and masks."""

    def __init__(self, reader: Any, expressions: Sequence[Expression]) -> None:
        self.reader = reader
        self._expressions = list(expressions)

    def expressions(self) -> list[Expression]:
        return list(self._expressions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


class VideoSubset:
    """The first ``max_videos`` videos of a reader (quick evaluation subsets); everything else passes through."""

    def __init__(self, reader: Any, max_videos: int) -> None:
        if max_videos < 1:
            raise ValueError(f"max_videos must be >= 1, got {max_videos}")
        self.reader = reader
        self._videos = list(reader.videos())[:max_videos]
        keep = set(self._videos)
        self._expressions = [e for e in reader.expressions() if e.video in keep]

    def videos(self) -> list[str]:
        return list(self._videos)

    def expressions(self) -> list[Expression]:
        return list(self._expressions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


class MixedClipDataset(Dataset[ClipSample]):
    """A fixed-length mix of datasets in given ratios (GLUS mixes MeViS and Ref-YouTube-VOS 1:1)."""

    def __init__(self, datasets: Sequence[tuple[Dataset[ClipSample], float]], length: int, seed: int = 0,
                 positive_pairs: bool = False) -> None:
        if not datasets:
            raise ValueError("MixedClipDataset needs at least one (dataset, ratio) pair")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        total = 0.0
        self._cumulative: list[float] = []
        for k, (dataset, ratio) in enumerate(datasets):
            if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
                raise ValueError(f"ratio of dataset {k} must be a finite number > 0, got {ratio!r}")
            if len(dataset) == 0:  # type: ignore[arg-type]
                raise ValueError(f"dataset {k} of the mix is empty")
            total += float(ratio)
            self._cumulative.append(total)
        self.datasets = [d for d, _ in datasets]
        self.ratios = [float(r) for _, r in datasets]
        self.length = length
        self.seed = seed
        self.epoch = 0
        # odd indices repeat the object set of the index before them (another expression of it), so a
        # batch of whole pairs always holds positives for the object contrastive loss
        self.positive_pairs = positive_pairs

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """New mix and new frame draws for the next epoch (forwarded to the member datasets)."""
        self.epoch = epoch
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def source(self, index: int) -> tuple[int, int]:
        """(which dataset, index inside it) that sample ``index`` comes from; cheap, loads nothing."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mix of {self.length} samples")
        if self.positive_pairs and index % 2 == 1:
            k, anchor = self._draw(index - 1)
            positives = getattr(self.datasets[k], "positives", None)
            choices = positives(anchor) if positives is not None else []
            if choices:
                return k, random.Random(f"pair:{self.seed}:{self.epoch}:{index}").choice(choices)
        return self._draw(index)

    def _draw(self, index: int) -> tuple[int, int]:
        rng = random.Random(f"mix:{self.seed}:{self.epoch}:{index}")
        k = bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1])
        k = min(k, len(self.datasets) - 1)
        return k, rng.randrange(len(self.datasets[k]))  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> ClipSample:
        k, inner = self.source(index)
        return self.datasets[k][inner]


def _masks_to(masks: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) bool -> (N, size, size) float {0, 1}; nearest keeps them binary."""
    t = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="nearest")[:, 0]


def collate_clips(samples: Sequence[ClipSample], clip_size: int, sam_size: int) -> dict[str, Any]:
    """Batch samples whose frames may differ in size: every frame is resized to the encoders' square input."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    for name, size in (("clip_size", clip_size), ("sam_size", sam_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {size!r}")
    nc, nq = len(samples[0].context), len(samples[0].query)
    context, query, query_sam, masks = [], [], [], []
    for b, s in enumerate(samples):
        where = f"sample {b} ({s.dataset} video {s.video!r})"
        if len(s.context) != nc or len(s.query) != nq:
            raise ValueError(
                f"{where} has {len(s.context)} context / {len(s.query)} query frames, "
                f"the first sample of the batch has {nc} / {nq}"
            )
        if s.query_masks.ndim != 3 or s.query_masks.shape[0] != nq:
            raise ValueError(f"{where}: query_masks of shape {s.query_masks.shape} do not match {nq} query frames")
        context.append(clip_input(to_tensor(s.context), clip_size) if nc else torch.zeros(0, 3, clip_size, clip_size))
        q = to_tensor(s.query)
        query.append(clip_input(q, clip_size))
        query_sam.append(sam_input(q, sam_size))
        masks.append(_masks_to(s.query_masks, sam_size))
    return {
        "context_clip": torch.stack(context),
        "query_clip": torch.stack(query),
        "query_sam": torch.stack(query_sam),
        "query_masks": torch.stack(masks),
        "expressions": [s.expression for s in samples],
        "object_keys": torch.tensor([s.object_key for s in samples], dtype=torch.long),
        "attributes": torch.tensor([s.attributes for s in samples], dtype=torch.long),
        "query_points": [s.query_points for s in samples] if all(s.query_points is not None for s in samples)
        else None,
        "cell_labels": torch.from_numpy(np.stack([s.cell_labels for s in samples])).long()
        if all(s.cell_labels is not None for s in samples) else None,
        "reference_cells": torch.from_numpy(np.stack([s.reference_cells for s in samples])).float()
        if all(s.reference_cells is not None for s in samples) else None,
        "motion_cells": torch.from_numpy(np.stack([s.motion_cells for s in samples])).float()
        if all(s.motion_cells is not None for s in samples) else None,
        "meta": [(s.dataset, s.video, list(s.query_idx)) for s in samples],
    }


def make_collate(clip_size: int, sam_size: int) -> Callable[[Sequence[ClipSample]], dict[str, Any]]:
    """A picklable ``collate_fn`` for ``DataLoader`` (works with worker processes)."""
    return partial(collate_clips, clip_size=clip_size, sam_size=sam_size)


# --- grounded answers and region prompts (GLaMM) ------------------------------------------------
DESCRIBE_QUESTION = "describe the video."  # the question a grounded caption answers
GROUNDED_KINDS = ("caption", "region_what", "region_track")


@dataclass
class GroundedSample:
    """A grounded-answer example: the question, the answer to teacher-force and one mask track per [SEG] target.

    ``answer`` is a marked caption (``<p>phrase</p> [SEG] ...``: ``phrase_masks[j]`` is the j-th phrase's
    object set in every query frame) or plain text (no masks); None means the referring answer, one [SEG]
    per query frame, with ``phrase_masks[0]`` the object's masks (``track <region>``).
    """

    question: str
    answer: str | None
    context: list[np.ndarray]
    query: list[np.ndarray]
    phrase_masks: np.ndarray         # (P, Nq, H, W) bool
    regions: list[Region]            # Region.frame indexes context + query
    kind: str                        # one of GROUNDED_KINDS
    dataset: str
    video: str
    context_idx: list[int] = field(default_factory=list)
    query_idx: list[int] = field(default_factory=list)


class GroundedClipDataset(Dataset[GroundedSample]):
    """Grounded captions and region prompts of a synthetic split (``synth_meta.json`` grounding keys).

    Items, in this order: every caption ("describe the video." -> the marked caption, a mask track per
    phrase), every region twice: "what is <region>?" -> the region's description (text only) and
    "track <region>" -> the object's masks through the referring answer. A region's query clip always holds
    the region's frame. Draws are a pure function of (seed, epoch, index), as ``ReferringClipDataset``.
    """

    def __init__(self, root: str | Path, split: str, name: str = "synth", num_context: int = 4, num_query: int = 4,
                 seed: int = 0, kinds: Sequence[str] = GROUNDED_KINDS) -> None:
        unknown = sorted(set(kinds) - set(GROUNDED_KINDS))
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {GROUNDED_KINDS}, got {list(kinds)}")
        if num_context < 0 or num_query < 1:
            raise ValueError(f"need num_context >= 0 and num_query >= 1, got {num_context}, {num_query}")
        self.reader = MevisDataset(root, split)
        self.name = name
        self.num_context = num_context
        self.num_query = num_query
        self.seed = seed
        self.epoch = 0
        self.grounding: dict[str, GroundingData] = load_grounding(self.reader.split_dir)
        self._phrases = {(e.video, e.exp_id): e for e in phrase_expressions(self.reader.split_dir)}
        self._items: list[tuple[str, str, int]] = []
        for video, data in self.grounding.items():
            if "caption" in kinds:
                self._items += [("caption", video, i) for i in range(len(data.captions))]
            for kind in ("region_what", "region_track"):
                if kind in kinds:
                    self._items += [(kind, video, i) for i in range(len(data.regions))]
        if not self._items:
            raise ValueError(f"split {self.reader.split_dir} has no grounded captions or regions to train on")

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> GroundedSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset {self.name!r} of {n} samples")
        kind, video, i = self._items[index % n]
        rng = random.Random(f"grounded:{self.seed}:{self.epoch}:{index % n}")
        names = self.reader.frames(video)
        context_idx = sample_context_frames(len(names), self.num_context, rng)
        data = self.grounding[video]
        if kind == "caption":
            caption = data.captions[i]
            query_idx = sample_query_clip(len(names), self.num_query, rng)
            tracks = [self.reader.gt_masks(self._phrases[(video, f"c{i}p{j}")]) for j in range(len(caption.phrases))]
            question, answer, regions = DESCRIBE_QUESTION, caption.text, []
        else:
            region = data.regions[i]
            query_idx = self._clip_holding(len(names), region.frame, rng)
            slot = len(context_idx) + query_idx.index(region.frame)
            regions = [Region.from_inclusive_box(*region.box, frame=slot)]
            if kind == "region_what":
                question, answer, tracks = WHAT_REGION_QUESTION, region.text, []
            else:
                obj = Expression(video, f"r{i}", region.text, (region.obj_id,), (data.anno_ids[region.obj_id],))
                question, answer, tracks = TRACK_REGION_QUESTION, None, [self.reader.gt_masks(obj)]
        frames = {t: self.reader.load_frame(video, names[t]) for t in dict.fromkeys(context_idx + query_idx)}
        height, width = frames[query_idx[0]].shape[:2]
        masks = np.stack([t[query_idx] for t in tracks]) if tracks else np.zeros(
            (0, len(query_idx), height, width), dtype=bool)
        return GroundedSample(question, answer, [frames[t] for t in context_idx], [frames[t] for t in query_idx],
                              np.ascontiguousarray(masks, dtype=bool), regions, kind, self.name, video,
                              context_idx, query_idx)

    def _clip_holding(self, num_frames: int, frame: int, rng: random.Random) -> list[int]:
        """``num_query`` consecutive frames (clamped for short videos) that include ``frame``."""
        lo, hi = max(0, frame - self.num_query + 1), min(frame, max(num_frames - self.num_query, 0))
        start = rng.randint(lo, max(lo, hi))
        return [min(start + k, num_frames - 1) for k in range(self.num_query)]


def collate_grounded(samples: Sequence[GroundedSample], clip_size: int, sam_size: int) -> dict[str, Any]:
    """Batch grounded samples: frames as ``collate_clips``; masks, answers and regions stay per sample."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    nc, nq = len(samples[0].context), len(samples[0].query)
    context, query, query_sam, masks = [], [], [], []
    for b, s in enumerate(samples):
        where = f"sample {b} ({s.dataset} video {s.video!r})"
        if len(s.context) != nc or len(s.query) != nq:
            raise ValueError(f"{where} has {len(s.context)} context / {len(s.query)} query frames, "
                             f"the first sample of the batch has {nc} / {nq}")
        if s.phrase_masks.ndim != 4 or s.phrase_masks.shape[1] != nq:
            raise ValueError(f"{where}: phrase_masks of shape {s.phrase_masks.shape} are not (P, {nq}, H, W)")
        context.append(clip_input(to_tensor(s.context), clip_size) if nc else torch.zeros(0, 3, clip_size, clip_size))
        q = to_tensor(s.query)
        query.append(clip_input(q, clip_size))
        query_sam.append(sam_input(q, sam_size))
        p = s.phrase_masks.shape[0]
        masks.append(_masks_to(s.phrase_masks.reshape(p * nq, *s.phrase_masks.shape[2:]), sam_size).reshape(
            p, nq, sam_size, sam_size) if p else torch.zeros(0, nq, sam_size, sam_size))
    return {
        "context_clip": torch.stack(context),
        "query_clip": torch.stack(query),
        "query_sam": torch.stack(query_sam),
        "phrase_masks": masks,
        "questions": [s.question for s in samples],
        "answers": [s.answer for s in samples],
        "regions": [list(s.regions) for s in samples],
        "region_frames": [{r.frame: (s.context + s.query)[r.frame] for r in s.regions} for s in samples],
        "kinds": [s.kind for s in samples],
        "meta": [(s.dataset, s.video, list(s.query_idx)) for s in samples],
    }


def make_grounded_collate(clip_size: int, sam_size: int) -> Callable[[Sequence[GroundedSample]], dict[str, Any]]:
    """A picklable ``collate_fn`` for grounded samples."""
    return partial(collate_grounded, clip_size=clip_size, sam_size=sam_size)
