"""Frame sampling: context frames, query windows, propagation orders, the streaming sampler."""

import itertools
import random

import pytest

from glus_ros.sampling import (
    StreamingSampler,
    context_frame_indices,
    propagation_orders,
    query_windows,
    sample_context_frames,
    sample_query_clip,
    segment_bounds,
    span_indices,
)


def test_context_frames_are_segment_middles():
    # 20 frames in 4 segments: [0,5) [5,10) [10,15) [15,20); middles (start+end-1)//2 = 2, 7, 12, 17
    assert context_frame_indices(20, 4) == [2, 7, 12, 17]
    # 10 frames: edges round(2.5)=2, 5, round(7.5)=8, 10 -> [0,2) [2,5) [5,8) [8,10) -> 0, 3, 6, 8
    assert context_frame_indices(10, 4) == [0, 3, 6, 8]


def test_context_frames_of_short_video_repeat_within_range():
    idx = context_frame_indices(2, 4)
    assert len(idx) == 4 and all(0 <= i < 2 for i in idx)
    assert context_frame_indices(1, 4) == [0, 0, 0, 0]


def test_segment_bounds_cover_video():
    bounds = segment_bounds(37, 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == 37
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_training_context_sample_one_per_segment():
    rng = random.Random(0)
    for _ in range(50):
        picks = sample_context_frames(40, 4, rng)
        assert [p // 10 for p in picks] == [0, 1, 2, 3]


def test_query_clip_is_consecutive():
    rng = random.Random(1)
    for _ in range(50):
        clip = sample_query_clip(9, 4, rng)
        assert clip == list(range(clip[0], clip[0] + 4)) and clip[-1] < 9
    assert sample_query_clip(2, 4, rng) == [0, 1, 1, 1]


def test_query_windows_give_every_frame_exactly_one_mask():
    order = list(range(10))
    windows = query_windows(order, size=4, stride=1)
    decoded = [f for w in windows for f in w.decode]
    assert decoded == order
    assert windows[0].frames == (0, 1, 2, 3) and windows[0].decode == (0, 1, 2, 3)
    # later windows: the 4 newest frames, decoding only the newest (stride 1)
    assert windows[1].frames == (1, 2, 3, 4) and windows[1].decode == (4,)
    assert windows[-1].frames == (6, 7, 8, 9) and windows[-1].decode == (9,)
    assert all(len(w.frames) == 4 for w in windows)


def test_query_windows_backward_and_short():
    windows = query_windows([5, 4, 3, 2, 1, 0], size=4)
    assert windows[0].frames == (5, 4, 3, 2) and windows[1].frames == (4, 3, 2, 1)
    assert query_windows([0, 1], size=4)[0].frames == (0, 1)
    with pytest.raises(ValueError, match="skip frames"):
        query_windows([0, 1, 2], size=2, stride=3)


def test_propagation_orders_from_key_frame():
    assert propagation_orders(5, 0) == [[0, 1, 2, 3, 4]]
    assert propagation_orders(5, 2) == [[2, 3, 4], [2, 1, 0]]
    with pytest.raises(ValueError, match="outside"):
        propagation_orders(5, 5)


def test_streaming_sampler_bounded_and_uniform():
    sampler = StreamingSampler(history=16, num_context=4, num_query=4)
    for i in range(100):
        sampler.push(i)
    assert len(sampler) == 16 and sampler.buffered()[0] == 84
    assert sampler.query_frames() == [96, 97, 98, 99]
    # older part = 84..95 (12 frames) -> segments of 3, middles at offsets 1, 4, 7, 10
    assert sampler.context_frames() == [85, 88, 91, 94]
    with pytest.raises(ValueError, match="increase"):
        sampler.push(50)


def test_streaming_sampler_whole_span_reaches_from_the_oldest_to_the_newest_frame():
    sampler = StreamingSampler(history=16, num_context=4, num_query=4, span="whole")
    sampler.push(0)
    assert sampler.context_frames() == [0, 0, 0, 0]
    for i in range(1, 100):
        sampler.push(i)
    assert sampler.context_frames() == [84, 89, 94, 99]  # 84..99 in three equal steps
    assert span_indices(7, 4) == [0, 2, 4, 6] and span_indices(5, 1) == [4]
    with pytest.raises(ValueError, match="span"):
        StreamingSampler(span="future")


def test_streaming_sampler_early_stream():
    sampler = StreamingSampler(history=16, num_context=4, num_query=4)
    sampler.push(0)
    sampler.push(1)
    assert sampler.query_frames() == [0, 1]
    assert all(c in (0, 1) for c in sampler.context_frames())
