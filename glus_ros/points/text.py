"""Points as Molmo writes them in text, and a parser that survives whatever a language model emits.

Molmo answers a pointing question with XML-like tags, coordinates in percent of the image::

    <point x="61.5" y="40.6" alt="cup">cup</point>
    <points x1="10.0" y1="20.0" x2="30.5" y2="40.0" alt="cups">cups</points>

and with plain text (e.g. "There are none.") when nothing is there. ``format_points`` writes that
format (training targets for a text-pointing model); ``parse_points`` reads it back leniently.

Parsing rules (documented because model output is often malformed):

- tags ``<point ...>`` and ``<points ...>`` in any case, with any whitespace; closing tags and the
  ``alt`` label are optional; an unclosed tag is read up to the next ``<`` or the end of the text;
- attribute values may be double-quoted, single-quoted or bare; ``xN``/``yN`` pair by their number
  (``x``/``y`` without a number form one more point); the first occurrence of a name wins;
- a point is DROPPED when its x or y is missing, not a number (NaN and inf included), cut off by
  the end of the text (a bare value still being written, an unclosed quote), or further than
  ``RANGE_TOLERANCE`` percent outside [0, 100];
- a coordinate within ``RANGE_TOLERANCE`` of the range (rounding, e.g. 100.4) is CLAMPED into it;
- nothing in a string raises: anything unreadable is simply not a point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]

RANGE_TOLERANCE = 1.0   # percent outside [0, 100] still read as the edge (clamped); beyond: dropped
NO_POINTS_TEXT = "There are none."

_TAG = re.compile(r"<\s*(points?)\b([^<>]*)", re.IGNORECASE)
_ATTR = re.compile(
    r"""(?<![\w-])([A-Za-z_][\w-]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'<>=/]+)(?=[\s/]))""",
)
_COORD_NAME = re.compile(r"([xy])(\d*)", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?")


def _percent(value: str) -> float | None:
    """A coordinate in percent -> [0, 1], or None when it is not a usable number."""
    value = value.strip()
    if not _NUMBER.fullmatch(value):
        return None
    number = float(value.rstrip("%"))
    if not math.isfinite(number) or number < -RANGE_TOLERANCE or number > 100.0 + RANGE_TOLERANCE:
        return None
    return min(max(number, 0.0), 100.0) / 100.0


def _tag_points(body: str) -> list[Point]:
    coords: dict[str, dict[str, str]] = {}
    for match in _ATTR.finditer(body):
        name_match = _COORD_NAME.fullmatch(match.group(1))
        if name_match is None:
            continue
        axis, index = name_match.group(1).lower(), name_match.group(2)
        value = next(g for g in match.groups()[1:] if g is not None)
        coords.setdefault(index, {}).setdefault(axis, value)
    points: list[Point] = []
    for index in sorted(coords, key=lambda i: (i != "", int(i) if i else 0)):
        pair = coords[index]
        if "x" not in pair or "y" not in pair:
            continue
        x, y = _percent(pair["x"]), _percent(pair["y"])
        if x is not None and y is not None:
            points.append((x, y))
    return points


def parse_points(text: str) -> list[Point]:
    """Every point written in ``text`` as normalised (x, y) in [0, 1], in the order written (see module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_points reads a str, got {type(text).__name__}")
    points: list[Point] = []
    for match in _TAG.finditer(text):
        body = match.group(2)
        if match.end() < len(text):  # ended by '>' or a new '<': a bare last value is complete
            body += " "
        points.extend(_tag_points(body))
    return points


def count_points(text: str) -> int:
    """The answer to a 'how many' question: the number of readable points."""
    return len(parse_points(text))


def _fmt(value: float) -> str:
    return f"{100.0 * value:.1f}"


def format_points(points: Sequence[Point], label: str) -> str:
    """Molmo-style text for normalised points; no points gives ``NO_POINTS_TEXT``."""
    if any(c in label for c in '"<>'):
        raise ValueError(f"point label must not contain '\"', '<' or '>': {label!r}")
    for i, point in enumerate(points):
        if len(point) != 2 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in point):
            raise ValueError(f"point {i} must be a finite (x, y) in [0, 1], got {point!r}")
    if not points:
        return NO_POINTS_TEXT
    if len(points) == 1:
        x, y = points[0]
        return f'<point x="{_fmt(x)}" y="{_fmt(y)}" alt="{label}">{label}</point>'
    attrs = " ".join(f'x{i}="{_fmt(x)}" y{i}="{_fmt(y)}"' for i, (x, y) in enumerate(points, start=1))
    return f'<points {attrs} alt="{label}">{label}</points>'


# --- Molmo2: points in time ---------------------------------------------------------------------
# Molmo2 (allenai/Molmo2-*, the model cards' "Pointing Video QA" / "Tracking Video QA" sections) writes
# all points of an answer into one ``coords`` attribute, coordinates in thousandths of the frame:
#
#     <points coords="0.5 1 523 412 2 100 200;1.0 3 530 415" alt="penguins">penguins</points>
#     Counting the <points coords="0.0 1 073 160 2 173 600">boats</points> shows a total of 2.
#
# The value is a list of frame groups, each ``TIME ID X Y [ID X Y ...]``: TIME the frame's timestamp in
# seconds as the prompt showed it (for a single image: the image's number, 1), ID the object's number
# (an object keeps its number across frames; counting = the number of distinct ids), X/Y in [0, 1000].
# ``<tracks ...>`` (the tracking answers) has the same value. The model card's own regexes accept a tab,
# ':', ',' or ';' between frame groups; the Molmo2 report's example uses ';', which ``format_video_points``
# writes. ``parse_video_points`` reads leniently, like ``parse_points``:
#
# - tags ``<points``, ``<point``, ``<tracks``, ``<track`` in any case; the first ``coords`` attribute of a
#   tag, quoted with " or '; other attributes and the text between tags are ignored;
# - groups are split at tab, ';' and ','; a ':' right after a group's first number separates the time
#   from the points ("0.5: 1 523 412"), any other ':' splits groups;
# - in a group, the first number is the time and the rest is read as (id, x, y) triples from the left;
#   a trailing incomplete triple is dropped; a non-number ends the group (what follows is not read);
# - a point is DROPPED when its id is not a whole number >= 0, its time is negative or not finite, or x/y
#   lie further than ``VIDEO_RANGE_TOLERANCE`` thousandths outside [0, 1000] (within it: CLAMPED);
# - a value cut off by the end of the text (no closing quote and nothing after it) may end in a number
#   still being written: its last token is dropped, so a truncated answer reads as a prefix of the full one;
# - nothing in a string raises.

VIDEO_COORD_SCALE = 1000.0    # Molmo2 writes x and y in thousandths of the frame
VIDEO_RANGE_TOLERANCE = 10.0  # thousandths outside [0, 1000] still read as the edge; beyond: dropped

_VIDEO_TAG = re.compile(r"<\s*(?:points?|tracks?)\b([^<>]*)", re.IGNORECASE)
_COORDS_ATTR = re.compile(r"""(?<![\w-])coords\s*=\s*(?:"([^"]*)("?)|'([^']*)('?))""", re.IGNORECASE)
_GROUP_SPLIT = re.compile(r"[\t;,]")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class VideoPoint:
    """One point of a Molmo2 answer: when, which object, where (normalised (x, y) in [0, 1])."""

    time: float
    object_id: int
    x: float
    y: float


def _thousandths(value: float) -> float | None:
    if not math.isfinite(value) or value < -VIDEO_RANGE_TOLERANCE or value > VIDEO_COORD_SCALE + VIDEO_RANGE_TOLERANCE:
        return None
    return min(max(value, 0.0), VIDEO_COORD_SCALE) / VIDEO_COORD_SCALE


def _group_tokens(value: str, complete: bool) -> list[list[str]]:
    """A coords value -> its frame groups as token lists (see the rules above)."""
    groups: list[list[str]] = []
    for part in _GROUP_SPLIT.split(value):
        groups.append([])
        for i, piece in enumerate(part.split(":")):
            if i > 0 and len(groups[-1]) != 1:  # ':' after a group's first number only separates the time
                groups.append([])
            groups[-1].extend(piece.split())
    groups = [g for g in groups if g]
    if not complete and groups:  # the last token may still be being written
        groups[-1].pop()
    return [g for g in groups if g]


def _group_points(tokens: list[str]) -> list[VideoPoint]:
    numbers: list[float] = []
    for t in tokens:
        if not _PLAIN_NUMBER.fullmatch(t):
            break
        numbers.append(float(t))
    if not numbers:
        return []
    time, rest = numbers[0], numbers[1:]
    if not math.isfinite(time) or time < 0:
        return []
    points = []
    for k in range(0, len(rest) - 2, 3):
        ident, x, y = rest[k], _thousandths(rest[k + 1]), _thousandths(rest[k + 2])
        if x is None or y is None or not math.isfinite(ident) or ident < 0 or ident != int(ident):
            continue
        points.append(VideoPoint(time, int(ident), x, y))
    return points


def parse_video_points(text: str) -> list[VideoPoint]:
    """Every point of a Molmo2 answer, in the order written (see the rules above); never raises on a str."""
    if not isinstance(text, str):
        raise TypeError(f"parse_video_points reads a str, got {type(text).__name__}")
    points: list[VideoPoint] = []
    for tag in _VIDEO_TAG.finditer(text):
        attr = _COORDS_ATTR.search(tag.group(1))
        if attr is None:
            continue
        double = attr.group(1) is not None
        value = attr.group(1) if double else attr.group(3)
        closed = bool(attr.group(2) if double else attr.group(4))
        # an unclosed quote is complete when the tag was ended by '>' or a new '<' (the text went on)
        complete = closed or tag.end() < len(text) or attr.end() < len(tag.group(1))
        for group in _group_tokens(value, complete):
            points.extend(_group_points(group))
    return points


def count_video_objects(text: str) -> int:
    """A Molmo2 counting answer's count: the number of distinct objects its points name."""
    return len({p.object_id for p in parse_video_points(text)})


def format_video_points(frames: Sequence[tuple[float, Sequence[tuple[int, Point]]]], label: str,
                        tag: str = "points") -> str:
    """Molmo2-style text: ``frames`` = (time, [(object id, normalised (x, y)), ...]) per frame, in order."""
    if any(c in label for c in '"<>'):
        raise ValueError(f"point label must not contain '\"', '<' or '>': {label!r}")
    if tag not in ("points", "tracks"):
        raise ValueError(f"tag must be 'points' or 'tracks', got {tag!r}")
    groups = []
    for time, objects in frames:
        if not math.isfinite(time) or time < 0:
            raise ValueError(f"frame time must be finite and >= 0, got {time!r}")
        triples = []
        for ident, (x, y) in objects:
            if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in (x, y)) or ident < 0:
                raise ValueError(f"object {ident} point {(x, y)!r} must be a finite (x, y) in [0, 1], id >= 0")
            triples.append(f"{int(ident)} {round(x * VIDEO_COORD_SCALE):03d} {round(y * VIDEO_COORD_SCALE):03d}")
        if triples:
            groups.append(f"{time:.1f} " + " ".join(triples))
    if not groups:
        return NO_POINTS_TEXT
    return f'<{tag} coords="{";".join(groups)}" alt="{label}">{label}</{tag}>'
