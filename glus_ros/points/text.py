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
