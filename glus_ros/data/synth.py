"""Synthetic MeViS-like referring-video benchmark: one video in memory, or a whole split on disk.

The project cannot download MeViS or pretrained weights, so it trains on videos it draws itself. A
split is written in the MeViS layout, so the ordinary MeViS reader, trainer and scorer use it as is::

    <out>/<split>/JPEGImages/<video>/00000.jpg ...
    <out>/<split>/meta_expressions.json   videos -> <video> -> {frames, expressions: {id: {exp, obj_id, anno_id}}}
    <out>/<split>/mask_dict.json          anno_id -> [per-frame COCO RLE, or null where the object is unseen]
    <out>/<split>/synth_meta.json         what the generator knows for free (for auxiliary supervision)

The same ``seed`` always gives byte-identical files; the split name is mixed into the seed. Grounding data
(counting questions, grounded captions, region prompts; see :mod:`glus_ros.data.grounding`) comes from a
second rng stream drawn after everything else and sits under its own keys of ``synth_meta.json``, so adding
it left every earlier file byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from glus_ros.data.config import SynthConfig
from glus_ros.data.expressions import (
    Description,
    NounPhrase,
    SceneFacts,
    SynthExpression,
    candidate_descriptions,
    count_questions,
    describe_scene,
    grounded_captions,
    render_text,
    resolve,
)
from glus_ros.data.grounding import SynthCaption, SynthQuestion, SynthRegion, grounding_json
from glus_ros.data.motion import runs
from glus_ros.data.render import Intrinsics, render_scene
from glus_ros.data.scene import Scene, sample_scene
from glus_ros.datasets.rle import encode_mask

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_MIN_VISIBILITY = 0.3  # every object shows at least this share of itself in some frame
_ATTEMPTS = 50
_GROUNDING_STREAM = 7919  # third seed word of the rng for grounding data: the first rng's draws stay as they were
QUESTIONS_PER_VIDEO = 6
CAPTIONS_PER_VIDEO = 2
REGIONS_PER_VIDEO = 3
_REGION_MIN_VISIBILITY = 0.5  # a region prompt shows at least half of its object where the object allows


@dataclass(frozen=True)
class ObjectFacts:
    """What the generator knows about one object, beyond its masks."""

    obj_id: int
    colour: str
    rgb: tuple[int, int, int]
    shape: str
    radius_px: float
    size: str  # "small" | "medium" | "large", relative to the frame's shorter side
    depth_m: float
    # normalised centre ((x + 0.5) / W, (y + 0.5) / H) of the whole shape, None where nothing of it shows
    centroid: tuple[tuple[float, float] | None, ...]
    visibility: tuple[float, ...]  # visible pixels / full shape area, per frame
    motion: tuple[tuple[str | None, int, int], ...]  # runs (direction or None, first step, end step)
    motion_tags: tuple[str, ...]
    group: int | None  # look-alike group id


@dataclass(frozen=True, eq=False)
class SyntheticVideo:
    name: str
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    depth: list[np.ndarray]  # (H, W) float32 metres
    intrinsics: Intrinsics
    object_masks: dict[int, np.ndarray]  # obj_id -> (T, H, W) bool visible pixels
    expressions: list[SynthExpression]
    objects: list[ObjectFacts]
    background: str
    scenario: str  # how its look-alikes differ ("move", "start", "stop", "turn", "size") or "none"
    questions: list[SynthQuestion] = field(default_factory=list)  # counting questions
    captions: list[SynthCaption] = field(default_factory=list)  # GLaMM-style grounded captions
    regions: list[SynthRegion] = field(default_factory=list)  # "what is this?" / "track this" prompts

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        height, width = self.frames[0].shape[:2]
        return height, width

    @property
    def frame_names(self) -> list[str]:
        return [f"{t:05d}" for t in range(len(self.frames))]


def split_seed(seed: int, split: str) -> int:
    """A 63-bit seed for one split, so train and valid drawn with the same seed differ."""
    digest = hashlib.sha256(f"{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _size_word(radius: float, side: int) -> str:
    fraction = radius / side
    return "small" if fraction < 0.085 else "large" if fraction > 0.115 else "medium"


def _object_facts(scene: Scene, visibility: dict[int, np.ndarray], tags: dict[int, dict]) -> list[ObjectFacts]:
    side = min(scene.height, scene.width)
    out = []
    for obj in scene.objects:
        seen = visibility[obj.obj_id]
        centroid = tuple(
            (round((float(x) + 0.5) / scene.width, 4), round((float(y) + 0.5) / scene.height, 4))
            if seen[t] > 0 else None
            for t, (x, y) in enumerate(obj.centres)
        )
        out.append(
            ObjectFacts(
                obj_id=obj.obj_id, colour=obj.colour, rgb=obj.rgb, shape=obj.shape,
                radius_px=round(obj.radius, 3), size=_size_word(obj.radius, side), depth_m=obj.depth,
                centroid=centroid, visibility=tuple(round(float(v), 4) for v in seen),
                motion=tuple((r.direction, r.start, r.end) for r in runs(obj.steps)),
                motion_tags=tuple(tags[obj.obj_id]), group=obj.group,
            )
        )
    return out


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x_min, y_min, x_max, y_max) of a non-empty mask, inclusive pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _mask_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel nearest its centroid: on the object even when occlusion bites into it."""
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def _region_text(
    obj_id: int, expressions: list[SynthExpression], facts: SceneFacts, rng: np.random.Generator
) -> tuple[str, bool]:
    """Words that name one object alone: one of its expressions, else any exact description, else colour+shape."""
    own = [e.text for e in expressions if e.obj_ids == (obj_id,)]
    if own:
        return own[int(rng.integers(len(own)))], True
    for desc in candidate_descriptions(facts):
        if resolve(desc, facts) == {obj_id}:
            return render_text(desc, 1, rng), True
    obj = next(o for o in facts.scene.objects if o.obj_id == obj_id)
    desc = Description(NounPhrase(obj.colour, obj.shape))
    return f"the {desc.noun.text()}", False


def region_prompts(
    visible: dict[int, np.ndarray], visibility: dict[int, np.ndarray], expressions: list[SynthExpression],
    facts: SceneFacts, rng: np.random.Generator, limit: int = REGIONS_PER_VIDEO,
) -> list[SynthRegion]:
    """Up to ``limit`` region prompts on distinct objects: box and point of the visible mask at one frame."""
    ids = [o.obj_id for o in facts.scene.objects]
    out = []
    for k in rng.permutation(len(ids))[:limit]:
        obj_id = ids[int(k)]
        seen = visibility[obj_id]
        frames = np.flatnonzero(seen >= min(_REGION_MIN_VISIBILITY, float(seen.max())))
        frame = int(frames[int(rng.integers(len(frames)))])
        mask = visible[obj_id][frame]
        if not mask.any():  # cannot happen for objects the generator keeps; guard against a silent empty box
            raise ValueError(f"object {obj_id} shows no pixel at frame {frame}")
        text, unique = _region_text(obj_id, expressions, facts, rng)
        out.append(SynthRegion(frame=frame, box=_mask_box(mask), point=_mask_point(mask), obj_id=obj_id, text=text,
                               unique=unique))
    return out


def generate_video(seed: int, index: int = 0, config: SynthConfig | None = None) -> SyntheticVideo:
    """Draw video ``index`` of the stream fixed by ``seed``: frames, depth, masks, expressions, facts."""
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"generate_video: {name} must be a non-negative integer, got {value!r}")
    config = config or SynthConfig()
    rng = np.random.default_rng([int(seed), int(index)])
    for _ in range(_ATTEMPTS):
        scene = sample_scene(rng, config)
        if scene is None:
            continue
        rendered = render_scene(scene, rng, config.fov_deg)
        if min(float(v.max()) for v in rendered.visibility.values()) < _MIN_VISIBILITY:
            continue  # an object hidden for the whole clip cannot be referred to
        expressions = describe_scene(scene, rng, config.max_expressions, config.expressions_per_object,
                                     config.twins)
        if not expressions:
            continue
        facts = SceneFacts.of(scene)
        grounding_rng = np.random.default_rng([int(seed), int(index), _GROUNDING_STREAM])
        questions = count_questions(facts, grounding_rng, QUESTIONS_PER_VIDEO)
        captions = grounded_captions(facts, grounding_rng, CAPTIONS_PER_VIDEO)
        regions = region_prompts(rendered.visible, rendered.visibility, expressions, facts, grounding_rng)
        return SyntheticVideo(
            name=f"synth_{index:05d}",
            frames=rendered.frames,
            depth=rendered.depth,
            intrinsics=rendered.intrinsics,
            object_masks=rendered.visible,
            expressions=expressions,
            objects=_object_facts(scene, rendered.visibility, facts.motions),
            background=rendered.background,
            scenario=scene.scenario,
            questions=questions,
            captions=captions,
            regions=regions,
        )
    raise ValueError(
        f"no usable scene after {_ATTEMPTS} draws (seed={seed}, index={index}): frames of "
        f"{config.min_side}-{config.max_side} px cannot hold {config.min_objects}-{config.max_objects} objects "
        f"of radius {config.radius} x side; use bigger frames or fewer/smaller objects"
    )


def write_video_frames(video: SyntheticVideo, folder: str | Path, ext: str = "jpg", quality: int = 95) -> list[Path]:
    """Write the frames of one video as ``00000.<ext>`` ... (jpg or png); returns the paths."""
    if ext not in ("jpg", "png"):
        raise ValueError(f"frame extension must be 'jpg' or 'png', got {ext!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"frame folder {folder} is a file, not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    paths = []
    for name, frame in zip(video.frame_names, video.frames, strict=True):
        ok, data = cv2.imencode(f".{ext}", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ValueError(f"could not encode frame {name} of {video.name} as {ext}")
        path = folder / f"{name}.{ext}"
        path.write_bytes(data.tobytes())
        paths.append(path)
    return paths


def _prepare_split_dir(out: Path, split: str, overwrite: bool) -> Path:
    if not _SPLIT_NAME.match(split):
        raise ValueError(f"split name {split!r} must be letters, digits, '_' or '-' (it becomes a folder name)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} is a file, not a directory")
    split_dir = out / split
    if split_dir.exists() and not split_dir.is_dir():
        raise ValueError(f"split path {split_dir} is a file, not a directory")
    if split_dir.exists() and any(split_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"{split_dir} is not empty; pass overwrite=True (--overwrite) to replace it")
        if not (split_dir / "synth_meta.json").is_file():
            raise ValueError(f"refusing to overwrite {split_dir}: it has no synth_meta.json, so synth did not write it")
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    return split_dir


def _video_meta(video: SyntheticVideo, anno_ids: dict[int, str]) -> dict[str, Any]:
    height, width = video.size
    objects = {}
    for facts in video.objects:
        entry = asdict(facts)
        del entry["obj_id"]
        entry["anno_id"] = anno_ids[facts.obj_id]
        objects[str(facts.obj_id)] = entry
    expressions = {
        str(i): {"exp": e.text, "obj_id": list(e.obj_ids), "kind": e.kind, "motion": e.motion,
                 "tags": list(e.tags), "event": list(e.event)}
        for i, e in enumerate(video.expressions)
    }
    return {
        "size": [height, width], "intrinsics": video.intrinsics.as_dict(), "background": video.background,
        "scenario": video.scenario, "objects": objects, "expressions": expressions,
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def write_split(
    out: str | Path, split: str, videos: int, seed: int, config: SynthConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate ``videos`` videos and write them in the MeViS layout under ``out/split``; returns that folder."""
    if isinstance(videos, bool) or not isinstance(videos, int) or videos <= 0:
        raise ValueError(f"number of videos must be a positive integer, got {videos!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    config = config or SynthConfig()
    split_dir = _prepare_split_dir(Path(out), split, overwrite)
    stream = split_seed(seed, split)
    meta: dict[str, Any] = {"videos": {}}
    masks: dict[str, list[dict | None]] = {}
    recorded = asdict(config)
    if not config.twins:  # options added later are recorded only when on: older splits stay byte-identical
        del recorded["twins"]
    extra: dict[str, Any] = {
        "generator": {"seed": seed, "split": split, "config": recorded},
        "videos": {},
    }
    next_anno = 0
    for index in tqdm(range(videos), desc=f"synth {split}", unit="video"):
        video = generate_video(stream, index, config)
        write_video_frames(video, split_dir / "JPEGImages" / video.name, "jpg", config.jpeg_quality)
        anno_ids = {}
        for obj_id, stack in video.object_masks.items():
            anno_ids[obj_id] = str(next_anno)
            masks[str(next_anno)] = [encode_mask(m) if m.any() else None for m in stack]
            next_anno += 1
        meta["videos"][video.name] = {
            "frames": video.frame_names,
            "expressions": {
                str(i): {"exp": e.text, "obj_id": list(e.obj_ids), "anno_id": [anno_ids[o] for o in e.obj_ids]}
                for i, e in enumerate(video.expressions)
            },
        }
        extra["videos"][video.name] = _video_meta(video, anno_ids)
        extra["videos"][video.name].update(grounding_json(video.questions, video.captions, video.regions, anno_ids))
    _write_json(split_dir / "meta_expressions.json", meta)
    _write_json(split_dir / "mask_dict.json", masks)
    _write_json(split_dir / "synth_meta.json", extra)
    return split_dir
