"""Molmo point text: writing it, and reading whatever a language model emits without ever raising."""

import math
import random
import time

import pytest

from glus_ros.points.text import NO_POINTS_TEXT, count_points, format_points, parse_points


def _close(a, b, tol=5e-4):
    if len(a) != len(b):
        return False
    return all(abs(x - u) <= tol and abs(y - v) <= tol for (x, y), (u, v) in zip(a, b, strict=True))


@pytest.mark.parametrize("points", [[], [(0.615, 0.406)], [(0.0, 1.0), (0.5, 0.25), (0.999, 0.001)]])
def test_format_then_parse_round_trips(points):
    text = format_points(points, "red cup")
    assert _close(parse_points(text), points)
    assert count_points(text) == len(points)


def test_format_writes_molmo_tags():
    assert format_points([(0.615, 0.406)], "cup") == '<point x="61.5" y="40.6" alt="cup">cup</point>'
    two = format_points([(0.1, 0.2), (0.3, 0.4)], "cups")
    assert two == '<points x1="10.0" y1="20.0" x2="30.0" y2="40.0" alt="cups">cups</points>'
    assert format_points([], "cups") == NO_POINTS_TEXT


@pytest.mark.parametrize(("text", "expected"), [
    ('The cup: <point x="61.5" y="40.6" alt="cup">cup</point>.', [(0.615, 0.406)]),
    ("<points x1='10' y1='20' x2=30.5 y2=40 alt=cups>cups</points>", [(0.1, 0.2), (0.305, 0.4)]),
    ('<POINT  X = "50"   Y="25" />', [(0.5, 0.25)]),
    ('<point x="10" y="20"', [(0.1, 0.2)]),                                    # unclosed, values complete
    ('<point x="10" y="20" <point x="30" y="40">', [(0.1, 0.2), (0.3, 0.4)]),  # unclosed, then another tag
    ('<points x2="30" y2="40" x1="10" y1="20">', [(0.1, 0.2), (0.3, 0.4)]),   # numbered order, not text order
    ('<points x1="10" y1="20" x2="30">', [(0.1, 0.2)]),                       # x2 without y2: dropped
    ('<point x="10" x="90" y="20">', [(0.1, 0.2)]),                           # first occurrence wins
    ('<point alt=\'a x="90" y="90"\' x="10" y="20">', [(0.1, 0.2)]),           # coordinates inside alt ignored
    ('<point x="12.5%" y="1e1">', [(0.125, 0.1)]),
    ('<point x="100.4" y="-0.6">', [(1.0, 0.0)]),                             # within tolerance: clamped
    ("There are none.", []),
    ("", []),
])
def test_parse_reads_molmo_and_lenient_variants(text, expected):
    assert _close(parse_points(text), expected)


@pytest.mark.parametrize("text", [
    '<point x="nan" y="20">', '<point x="inf" y="20">', '<point x="ten" y="20">', '<point x="" y="20">',
    '<point x="150" y="20">', '<point x="-5" y="20">', '<point x="10">', '<point y="10">',
    '<point x="10" y="2',      # cut inside a quoted value
    "<point x=10 y=20",        # a bare value at the very end may still be being written
    "<pointer x=10 y=20>", "point x=10 y=20", '<point x="1e999" y="2">', "<point x=0x10 y=5>",
])
def test_malformed_points_are_dropped(text):
    assert parse_points(text) == []


def test_truncated_output_yields_a_prefix_of_the_points():
    full_points = [(0.1, 0.2), (0.3, 0.4), (0.55, 0.66), (0.7, 0.8)]
    text = format_points(full_points, "objects")
    full = parse_points(text)
    for cut in range(len(text) + 1):
        got = parse_points(text[:cut])
        assert got == full[: len(got)], text[:cut]


def test_fuzz_never_raises_and_points_are_in_range():
    rng = random.Random(1234)
    pieces = ["<point", "<points", " x", " y", "x1", "y1", "x2", "y2", "=", '"', "'", "12.5", "-3", "100",
              "nan", "inf", "1e5", ">", "</point>", "/", " ", "alt=", "%", ".", "<", "abc", "\n", "é", "\x00"]
    start = time.perf_counter()
    for _ in range(3000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))
        else:
            text = "".join(chr(rng.randrange(0, 0x2FF)) for _ in range(rng.randrange(0, 80)))
        for x, y in parse_points(text):
            assert math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0
    assert time.perf_counter() - start < 10.0


def test_long_hostile_input_is_fast():
    start = time.perf_counter()
    for text in ("<point " + "a" * 100_000, "<point x=" + "1" * 100_000, "<point " + 'x="1" ' * 20_000,
                 "<" * 100_000, "<points " + " ".join(f"x{i}={i % 100} y{i}=5" for i in range(5000)) + ">"):
        parse_points(text)
    assert time.perf_counter() - start < 5.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="str"):
        parse_points(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="point 0"):
        format_points([(1.5, 0.2)], "cup")
    with pytest.raises(ValueError, match="point 1"):
        format_points([(0.5, 0.2), (float("nan"), 0.1)], "cup")
    with pytest.raises(ValueError, match="label"):
        format_points([(0.5, 0.2)], 'the "cup"')
