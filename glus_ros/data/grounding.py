"""Grounding data of synthetic videos: counting questions, grounded captions, region prompts, and their JSON form.

The generator writes them into ``synth_meta.json`` under the per-video keys ``questions``, ``captions`` and
``regions`` (next to, never instead of, the older keys); :func:`load_grounding` reads them back as typed
records. Captions mark phrases the GLaMM way: ``<p>a red circle</p> [SEG] moves left``; every marked phrase
is tied to the exact set of objects it names, and ``phrases`` holds its character span in the plain text.
Object ids map to ``mask_dict.json`` keys through each video's ``objects.<obj_id>.anno_id`` (a split-wide
counter, not the obj_id), so :func:`count_expressions` can hand questions to the MeViS reader's ``gt_masks``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glus_ros.datasets.base import Expression, read_json

# the tokenizer reserves these (glus_ros.model.tokenizer); kept here so the data layer needs no model code
PHRASE_START = "<p>"
PHRASE_END = "</p>"
SEG = "[SEG]"
GROUNDING_KEYS: tuple[str, ...] = ("questions", "captions", "regions")
_MARKED = re.compile(r"<p>(.*?)</p>[ ]?\[SEG\]", re.DOTALL)

Phrase = tuple[int, int, tuple[int, ...]]  # (start, end) character span in the plain text, and its obj_ids


@dataclass(frozen=True)
class SynthQuestion:
    """A counting question; ``obj_ids`` are the counted objects (empty for a zero answer)."""

    text: str
    obj_ids: tuple[int, ...]
    count: int
    kind: str = "count"
    tags: tuple[str, ...] = ()  # facts it asks about: colour:, shape:, motion:

    def __post_init__(self) -> None:
        if self.count != len(self.obj_ids) or list(self.obj_ids) != sorted(set(self.obj_ids)):
            raise ValueError(
                f"question {self.text!r}: count {self.count} must equal the number of distinct sorted obj_ids "
                f"{self.obj_ids}"
            )

    @property
    def answer(self) -> str:
        return str(self.count)


@dataclass(frozen=True)
class SynthCaption:
    """A scene caption with grounded phrases: ``text`` carries the markers, ``plain`` does not.

    ``phrases[i]`` is ``(start, end, obj_ids)`` with ``plain[start:end]`` the phrase; ``phrase_tags[i]`` are
    the facts the phrase states (``colour:``, ``shape:``, ``size:``, ``motion:``, ``position:``, ...).
    """

    text: str
    plain: str
    phrases: tuple[Phrase, ...]
    phrase_tags: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.phrase_tags:
            object.__setattr__(self, "phrase_tags", ((),) * len(self.phrases))
        if len(self.phrase_tags) != len(self.phrases):
            raise ValueError(
                f"caption {self.plain!r}: {len(self.phrase_tags)} tag sets for {len(self.phrases)} phrases"
            )
        for start, end, _ in self.phrases:
            if not 0 <= start < end <= len(self.plain):
                raise ValueError(f"caption {self.plain!r}: phrase span ({start}, {end}) lies outside the text")

    @classmethod
    def from_parts(cls, parts: Sequence[str | tuple[str, Sequence[int], Sequence[str]]]) -> SynthCaption:
        """Join plain strings and ``(phrase, obj_ids, tags)`` triples; phrases are marked and their spans kept."""
        marked: list[str] = []
        plain: list[str] = []
        phrases: list[Phrase] = []
        tags: list[tuple[str, ...]] = []
        offset = 0
        for part in parts:
            if isinstance(part, str):
                words = part
                marked.append(words)
            else:
                words, obj_ids, phrase_tags = part
                if not words or any(tok in words for tok in (PHRASE_START, PHRASE_END, SEG)):
                    raise ValueError(f"caption phrase {words!r} is empty or holds a marker")
                phrases.append((offset, offset + len(words), tuple(sorted(int(o) for o in obj_ids))))
                tags.append(tuple(phrase_tags))
                marked.append(f"{PHRASE_START}{words}{PHRASE_END} {SEG}")
            plain.append(words)
            offset += len(words)
        return cls(text="".join(marked), plain="".join(plain), phrases=tuple(phrases), phrase_tags=tuple(tags))

    def phrase_texts(self) -> list[str]:
        return [self.plain[start:end] for start, end, _ in self.phrases]


@dataclass(frozen=True)
class SynthRegion:
    """A region prompt: one object's visible pixels at ``frame`` given as a box and a point, and what it is."""

    frame: int
    box: tuple[int, int, int, int]  # (x_min, y_min, x_max, y_max) px, both corners inclusive (BoundingBox2D)
    point: tuple[int, int]  # (x, y) px of a pixel of the object's visible mask at that frame
    obj_id: int
    text: str  # a description of the object ("what is this?")
    unique: bool  # whether ``text`` picks out this object alone over the whole clip


@dataclass(frozen=True)
class GroundingData:
    """Everything grounded about one video, and how its obj_ids map to ``mask_dict.json`` keys."""

    video: str
    questions: list[SynthQuestion]
    captions: list[SynthCaption]
    regions: list[SynthRegion]
    anno_ids: dict[int, str]


def parse_marked(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Plain text and phrase spans of a marked caption (``<p>...</p> [SEG]``), e.g. decoded model output."""
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    offset, last = 0, 0
    for match in _MARKED.finditer(text):
        before, words = text[last:match.start()], match.group(1)
        if any(tok in before for tok in (PHRASE_START, PHRASE_END, SEG)) or PHRASE_START in words:
            raise ValueError(f"malformed grounded text near character {last}: {text!r}")
        plain += [before, words]
        offset += len(before)
        spans.append((offset, offset + len(words)))
        offset += len(words)
        last = match.end()
    rest = text[last:]
    if any(tok in rest for tok in (PHRASE_START, PHRASE_END, SEG)):
        raise ValueError(f"malformed grounded text near character {last}: {text!r}")
    plain.append(rest)
    return "".join(plain), spans


def grounding_json(
    questions: Sequence[SynthQuestion], captions: Sequence[SynthCaption], regions: Sequence[SynthRegion],
    anno_ids: dict[int, str],
) -> dict[str, Any]:
    """The new per-video keys of ``synth_meta.json`` (object ids come with their anno_ids)."""
    return {
        "questions": [
            {"q": q.text, "obj_id": list(q.obj_ids), "anno_id": [anno_ids[o] for o in q.obj_ids],
             "count": q.count, "kind": q.kind, "tags": list(q.tags)}
            for q in questions
        ],
        "captions": [
            {"text": c.text, "plain": c.plain,
             "phrases": [{"start": s, "end": e, "obj_id": list(ids), "anno_id": [anno_ids[o] for o in ids],
                          "tags": list(tags)}
                         for (s, e, ids), tags in zip(c.phrases, c.phrase_tags, strict=True)]}
            for c in captions
        ],
        "regions": [
            {"frame": r.frame, "box": list(r.box), "point": list(r.point), "obj_id": r.obj_id,
             "anno_id": anno_ids[r.obj_id], "text": r.text, "unique": r.unique}
            for r in regions
        ],
    }


def _ints(raw: Any, where: str, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        raise ValueError(f"{where}: expected a list of integers, got {raw!r}")
    if length is not None and len(raw) != length:
        raise ValueError(f"{where}: expected {length} integers, got {raw!r}")
    return tuple(raw)


def _question(raw: dict[str, Any], where: str) -> SynthQuestion:
    return SynthQuestion(str(raw["q"]), _ints(raw["obj_id"], where), int(raw["count"]), str(raw["kind"]),
                         tuple(str(t) for t in raw["tags"]))


def _caption(raw: dict[str, Any], where: str) -> SynthCaption:
    phrases = tuple((int(p["start"]), int(p["end"]), _ints(p["obj_id"], where)) for p in raw["phrases"])
    tags = tuple(tuple(str(t) for t in p["tags"]) for p in raw["phrases"])
    caption = SynthCaption(str(raw["text"]), str(raw["plain"]), phrases, tags)
    plain, spans = parse_marked(caption.text)
    if plain != caption.plain or spans != [(start, end) for start, end, _ in phrases]:
        raise ValueError(f"{where}: phrase spans or plain text disagree with the marked text {caption.text!r}")
    return caption


def _region(raw: dict[str, Any], where: str) -> SynthRegion:
    x0, y0, x1, y1 = _ints(raw["box"], f"{where} box", 4)
    x, y = _ints(raw["point"], f"{where} point", 2)
    return SynthRegion(int(raw["frame"]), (x0, y0, x1, y1), (x, y), int(raw["obj_id"]), str(raw["text"]),
                       bool(raw["unique"]))


def _video_grounding(video: str, entry: Any, where: str) -> GroundingData:
    if not isinstance(entry, dict) or not isinstance(entry.get("objects"), dict):
        raise ValueError(f"{where}: expected an object with an 'objects' mapping")
    missing = [k for k in GROUNDING_KEYS if k not in entry]
    if missing:
        raise ValueError(
            f"{where}: no {', '.join(missing)}; this split was written before the generator made grounding "
            "data, write it again (same seed: the older files come out byte-identical)"
        )
    try:
        anno_ids = {int(k): str(v["anno_id"]) for k, v in entry["objects"].items()}
        questions = [_question(q, f"{where} question {i}") for i, q in enumerate(entry["questions"])]
        captions = [_caption(c, f"{where} caption {i}") for i, c in enumerate(entry["captions"])]
        regions = [_region(r, f"{where} region {i}") for i, r in enumerate(entry["regions"])]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: malformed grounding entry ({type(exc).__name__}: {exc})") from exc
    used = {o for q in questions for o in q.obj_ids} | {r.obj_id for r in regions}
    used |= {o for c in captions for _, _, ids in c.phrases for o in ids}
    unknown = sorted(used - set(anno_ids))
    if unknown:
        raise ValueError(f"{where}: grounding refers to obj_ids {unknown} that are not among its objects")
    return GroundingData(video=video, questions=questions, captions=captions, regions=regions, anno_ids=anno_ids)


def load_grounding(split_dir: str | Path) -> dict[str, GroundingData]:
    """Questions, captions and regions of every video of a synthetic split, keyed by video name."""
    path = Path(split_dir) / "synth_meta.json"
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise ValueError(f"{path}: expected an object with a 'videos' mapping")
    return {
        video: _video_grounding(video, entry, f"{path}: video {video!r}") for video, entry in data["videos"].items()
    }


def count_expressions(split_dir: str | Path) -> list[Expression]:
    """Counting questions as MeViS-style expressions (exp_id ``q<i>``): ``gt_masks`` gives the counted objects."""
    out = []
    for video, data in load_grounding(split_dir).items():
        for i, q in enumerate(data.questions):
            anno = tuple(data.anno_ids[o] for o in q.obj_ids)
            out.append(Expression(video=video, exp_id=f"q{i}", text=q.text, obj_ids=q.obj_ids, anno_ids=anno))
    return out


def phrase_expressions(split_dir: str | Path) -> list[Expression]:
    """Caption phrases as MeViS-style expressions (exp_id ``c<i>p<j>``), for phrase-grounding supervision."""
    out = []
    for video, data in load_grounding(split_dir).items():
        for i, caption in enumerate(data.captions):
            for j, (start, end, ids) in enumerate(caption.phrases):
                anno = tuple(data.anno_ids[o] for o in ids)
                out.append(Expression(video=video, exp_id=f"c{i}p{j}", text=caption.plain[start:end], obj_ids=ids,
                                      anno_ids=anno))
    return out
