"""Molmo2's points in time: writing them, and reading whatever a model emits without ever raising."""

import math
import random
import time

import pytest

from glus_ros.points.text import (
    NO_POINTS_TEXT,
    VideoPoint,
    count_video_objects,
    format_video_points,
    parse_video_points,
)


def _xy(points):
    return [(p.time, p.object_id, round(p.x, 4), round(p.y, 4)) for p in points]


@pytest.mark.parametrize(("text", "expected"), [
    # the layout of the model cards' pointing / tracking answers: groups "TIME ID X Y ...", thousandths
    ('<points coords="0.5 1 523 412 2 100 200;1.0 3 530 415" alt="penguins">penguins</points>',
     [(0.5, 1, 0.523, 0.412), (0.5, 2, 0.1, 0.2), (1.0, 3, 0.53, 0.415)]),
    ('Counting the <points coords="1 1 073 160 2 173 600" alt="boats">the boats</points> shows a total of 2.',
     [(1.0, 1, 0.073, 0.16), (1.0, 2, 0.173, 0.6)]),
    ('<tracks coords="0.0 1 500 500\t0.5 1 510 505">the car</tracks>', [(0.0, 1, 0.5, 0.5), (0.5, 1, 0.51, 0.505)]),
    ('<points coords="0: 1 500 250; 1: 1 700 300"/>', [(0.0, 1, 0.5, 0.25), (1.0, 1, 0.7, 0.3)]),   # "t: ..."
    ('<points coords="0.0 1 500 250:0.5 2 100 100">', [(0.0, 1, 0.5, 0.25), (0.5, 2, 0.1, 0.1)]),  # ':' splits
    ("<POINTS   COORDS = '2.5 4 1000 0'>", [(2.5, 4, 1.0, 0.0)]),
    ('<points coords="0.0 1 1004 -3 2 1020 5">', [(0.0, 1, 1.0, 0.0)]),   # within tolerance: clamped; beyond: dropped
    ('<points coords="0.0 1 500 500 2 600">', [(0.0, 1, 0.5, 0.5)]),     # trailing incomplete triple dropped
    ('<points coords="0.0 1 500 abc 2 600 600">', []),                    # a non-number ends its group
    ('<points coords="0.0 1 500 500; 1.5 2 nan 9">', [(0.0, 1, 0.5, 0.5)]),
    ('<points coords="0.0 1.5 500 500 -1 100 100 2 300 300">', [(0.0, 2, 0.3, 0.3)]),  # ids: whole, >= 0
    ('<points coords="-1.0 1 500 500">', []),                             # negative time
    ('<points x1="10" y1="20">no coords here</points> <point coords="3.0 1 010 020">',
     [(3.0, 1, 0.01, 0.02)]),
    ('<points coords="0.0 1 500 500" coords="9.0 1 100 100">', [(0.0, 1, 0.5, 0.5)]),  # first coords wins
    ("There are none.", []),
    ("", []),
])
def test_parse_reads_molmo2_answers_and_lenient_variants(text, expected):
    assert _xy(parse_video_points(text)) == expected


def test_format_then_parse_round_trips_and_counts_objects():
    frames = [(0.0, [(1, (0.25, 0.5)), (2, (0.999, 0.0))]), (0.5, []), (1.5, [(1, (0.07, 1.0))])]
    text = format_video_points(frames, "red cups")
    assert text == '<points coords="0.0 1 250 500 2 999 000;1.5 1 070 1000" alt="red cups">red cups</points>'
    assert _xy(parse_video_points(text)) == [(0.0, 1, 0.25, 0.5), (0.0, 2, 0.999, 0.0), (1.5, 1, 0.07, 1.0)]
    assert count_video_objects(text) == 2
    assert format_video_points([(0.0, [])], "x") == NO_POINTS_TEXT
    assert format_video_points(frames, "car", tag="tracks").startswith('<tracks coords="0.0 1 250 500')


def test_truncated_answer_reads_as_a_prefix_of_the_full_one():
    frames = [(0.0, [(1, (0.1, 0.2)), (2, (0.3, 0.4))]), (0.5, [(1, (0.55, 0.66))]), (12.5, [(3, (0.7, 0.8))])]
    text = "Counting the " + format_video_points(frames, "objects") + " shows a total of 3."
    full = parse_video_points(text)
    assert len(full) == 4
    for cut in range(len(text) + 1):
        got = parse_video_points(text[:cut])
        assert got == full[: len(got)], text[:cut]


@pytest.mark.parametrize("text", [
    '<points coords="0.0 1 523 41',      # the last number may still be being written
    '<points coords="0.0 1 523 412',     # ... even when it looks complete
    '<points coords="0.',
    '<points coords=',
    "<pointer coords='0.0 1 500 500'>",
    "points coords='0.0 1 500 500'",
    '<points coords="0.0 1 5e2 500">',
    '<points coords="inf 1 500 500">',
    '<points xcoords="0.0 1 500 500">',
])
def test_malformed_or_cut_off_points_are_dropped(text):
    assert parse_video_points(text) == []


def test_an_unclosed_quote_ended_by_the_tag_is_complete():
    assert _xy(parse_video_points('<points coords="0.0 1 523 412>x</points>')) == [(0.0, 1, 0.523, 0.412)]


def test_fuzz_never_raises_and_points_are_in_range():
    rng = random.Random(2024)
    pieces = ["<points", "<tracks", "<point", " coords", "=", '"', "'", "0.5", "1", "523", "1000", "-3", "nan",
              "1e5", ";", ",", ":", "\t", " ", ">", "</points>", "/", "alt=", "x1=", "<", "abc", "\n", "é", "\x00",
              "."]
    start = time.perf_counter()
    for _ in range(3000):
        if rng.random() < 0.6:
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 50)))
        else:
            text = "".join(chr(rng.randrange(0, 0x2FF)) for _ in range(rng.randrange(0, 80)))
        for p in parse_video_points(text):
            assert isinstance(p, VideoPoint) and p.object_id >= 0 and isinstance(p.object_id, int)
            assert math.isfinite(p.time) and p.time >= 0
            assert 0.0 <= p.x <= 1.0 and 0.0 <= p.y <= 1.0
        assert count_video_objects(text) <= len(parse_video_points(text))
    assert time.perf_counter() - start < 10.0


def test_long_hostile_input_is_fast():
    start = time.perf_counter()
    for text in ('<points coords="' + "1 " * 100_000, '<points coords="' + ";" * 100_000 + '"',
                 "<points " * 20_000, '<points coords="0.0 ' + " ".join(f"{i} 500 500" for i in range(20_000)) + '">',
                 '<points coords="' + ":1" * 50_000 + '"'):
        parse_video_points(text)
    assert time.perf_counter() - start < 5.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="str"):
        parse_video_points(b"<points>")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label"):
        format_video_points([(0.0, [(1, (0.5, 0.5))])], 'a "cup"')
    with pytest.raises(ValueError, match="finite"):
        format_video_points([(0.0, [(1, (1.5, 0.5))])], "cup")
    with pytest.raises(ValueError, match="time"):
        format_video_points([(-1.0, [(1, (0.5, 0.5))])], "cup")
    with pytest.raises(ValueError, match="tag"):
        format_video_points([(0.0, [(1, (0.5, 0.5))])], "cup", tag="boxes")
