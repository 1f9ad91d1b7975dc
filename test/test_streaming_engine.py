"""The streaming engine on the real tiny model: schedules, bounded state, targets, threading, bad input."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from glus_ros.inference import load_model
from glus_ros.model.glus import GLUSModel
from glus_ros.streaming import (
    CameraIntrinsics,
    EngineConfig,
    FrameResult,
    StreamFrame,
    StreamingEngine,
    TargetSpec,
    UnknownTargetError,
    lift_point,
    mask_bbox,
)

from helpers_model import MethodSpy, assert_mask_points, moving_disk_clip

H, W = 96, 128
INTR = CameraIntrinsics(fx=100.0, fy=100.0, cx=64.0, cy=48.0)


class CallCounter(MethodSpy):
    """Counts calls of one model method (and batch sizes) while calling the real method."""

    def __init__(self, model: GLUSModel, name: str) -> None:
        super().__init__(model, name)
        self.batches: list[int] = []
        self.fail = threading.Event()  # set: the next call raises (fault injection)

    def __call__(self, *args, **kwargs):
        if self.fail.is_set():
            self.fail.clear()
            raise RuntimeError("injected fault")
        self.batches.append(int(args[0].shape[0]) if hasattr(args[0], "shape") else 1)
        return self.original(*args, **kwargs)



@pytest.fixture(scope="module")
def model() -> GLUSModel:
    return load_model("tiny")  # a private instance: tests wrap its methods


@pytest.fixture()
def mllm(model: GLUSModel) -> Iterator[CallCounter]:
    with CallCounter(model, "seg_prompts") as counter:
        yield counter


CLIP = moving_disk_clip(40, H, W)
DEPTH = np.full((H, W), 1.5, dtype=np.float32)


def frame(i: int, **kwargs) -> StreamFrame:
    return StreamFrame(image=CLIP[i % len(CLIP)], stamp=100.0 + i / 30, **kwargs)


def states(result: FrameResult) -> list[str]:
    return [t.state for t in result.targets]


def expected_state(out, due: bool) -> str:
    if out.score <= 0.5:
        return "lost"
    return "grounding" if due else "tracking"


def test_full_schedule_grounds_every_frame_and_outputs_are_consistent(model: GLUSModel, mllm: CallCounter) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="full", history=8))
    engine.add_target(TargetSpec("disk", "the  red disk ", mode="both"))
    visible = 0
    for i in range(6):
        result = engine.process(StreamFrame(CLIP[i], stamp=5.0 + i, frame_id="cam", depth=DEPTH, intrinsics=INTR,
                                            seq=70 + i))
        assert (result.stamp, result.frame_id, result.seq) == (5.0 + i, "cam", 70 + i)
        assert (result.width, result.height) == (W, H) and result.image is CLIP[i]
        assert result.latency_ms > 0 and result.frames_dropped == 0
        (out,) = result.targets
        assert out.target_id == "disk" and out.expression == "the red disk" and out.mode == "both"
        assert out.mask.shape == (H, W) and out.mask.dtype == bool
        assert 0.0 <= out.score <= 1.0
        assert out.state == expected_state(out, due=True)
        assert out.bbox == mask_bbox(out.mask)
        if out.state == "lost":
            assert not out.mask.any() and out.point_2d is None and out.point_3d is None
            continue
        visible += 1
        x, y = out.point_2d
        assert out.mask[int(y), int(x)]
        assert out.point_3d == pytest.approx(lift_point(x, y, DEPTH, INTR))
        assert out.point_3d[2] == pytest.approx(1.5)
    assert visible >= 3  # the schedule was really exercised, not hidden by "lost"
    assert mllm.batches == [1] * 6
    assert engine.targets()[0][1] == result.targets[0].state


def test_fast_schedule_skips_the_mllm_between_regroundings(model: GLUSModel, mllm: CallCounter) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=4, reground_below=0.0, history=16))
    engine.add_target(TargetSpec("a", "the red disk"))
    engine.add_target(TargetSpec("b", "the noisy background"))
    results = [engine.process(frame(i)) for i in range(10)]
    for i, result in enumerate(results):
        for out in result.targets:
            assert out.state == expected_state(out, due=i % 4 == 0), (i, out.target_id)
    assert sum(s == "tracking" for r in results for s in states(r)) >= 8
    assert mllm.batches == [2, 2, 2]  # frames 0, 4, 8: both targets in one batched pass
    engine.replace_target(TargetSpec("b", "the disk on the right"))
    out_a, out_b = engine.process(frame(10)).targets
    assert out_b.expression == "the disk on the right"
    assert out_a.state == expected_state(out_a, due=False)
    assert out_b.state == expected_state(out_b, due=True)
    assert mllm.batches == [2, 2, 2, 1]  # only the replaced target was re-grounded


def test_fast_schedule_regrounds_a_target_whose_score_is_low(model: GLUSModel, mllm: CallCounter) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=100, reground_below=1.0))
    engine.add_target(TargetSpec("a", "the red disk"))
    for i in range(4):
        engine.process(frame(i))  # every score < 1.0: every frame re-grounds
    assert mllm.batches == [1] * 4


def test_batched_grounding_matches_one_target_at_a_time(model: GLUSModel) -> None:
    exprs = ["the red disk", "the dark noise on the left side of the picture"]
    both = StreamingEngine(model, EngineConfig(schedule="full"))
    singles = [StreamingEngine(model, EngineConfig(schedule="full")) for _ in exprs]
    for i, (engine, text) in enumerate(zip(singles, exprs, strict=True)):
        both.add_target(TargetSpec(f"t{i}", text))
        engine.add_target(TargetSpec(f"t{i}", text))
    for i in range(3):
        batched = both.process(frame(i)).targets
        for j, engine in enumerate(singles):
            alone = engine.process(frame(i)).targets[0]
            assert batched[j].score == pytest.approx(alone.score, abs=1e-4)
            assert (batched[j].mask != alone.mask).mean() < 0.01


def test_a_motion_field_reads_the_engines_context_frames() -> None:
    import torch

    torch.manual_seed(0)
    moving = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True, "grounding_spatial": True,
                                                              "grounding_motion": 4}}).eval()
    with torch.no_grad():
        moving.grounding_map.spatial.motion.weight.normal_()   # the map reads the field
    seen: list[tuple[int, ...]] = []
    moving.grounding_map.motion.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape)))
    exprs = ["the red disk", "the dark noise"]
    both = StreamingEngine(moving, EngineConfig(schedule="full"))
    single = StreamingEngine(moving, EngineConfig(schedule="full"))
    for i, text in enumerate(exprs):
        both.add_target(TargetSpec(f"t{i}", text))
    single.add_target(TargetSpec("t0", exprs[0]))
    for i in range(6):
        batched, alone = both.process(frame(i)).targets[0], single.process(frame(i)).targets[0]
        assert batched.score == pytest.approx(alone.score, abs=1e-4)
    size = moving.cfg.vlm.image_size
    assert seen[-2:] == [(2, 4, 3, size, size), (1, 4, 3, size, size)]


def test_memory_banks_and_history_stay_bounded(model: GLUSModel) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=5, history=6))
    engine.add_target(TargetSpec("a", "the red disk"))
    capacity = model.new_memory_bank().capacity
    for i in range(capacity + 4):
        engine.process(frame(i))
        sizes = engine.cache_sizes()
        assert sizes["history"] <= 6 and sizes["clip_inputs"] <= 6 and sizes["clip_embeds"] <= 6
        assert sizes["max_memory_entries"] <= capacity
    assert sizes["history"] == 6 and sizes["max_memory_entries"] == capacity


def test_frames_without_targets_skip_the_model_but_fill_the_history(model: GLUSModel, mllm: CallCounter) -> None:
    engine = StreamingEngine(model, EngineConfig(history=8))
    for i in range(5):
        assert engine.process(frame(i)).targets == []
    assert mllm.batches == [] and engine.cache_sizes()["history"] == 5
    engine.add_target(TargetSpec("", "the red disk"))
    assert engine.process(frame(5)).targets[0].target_id == "target_0"
    assert mllm.batches == [1]
    # context evenly over frames 0..5 (0, 2, 3, 5) + the query window 2..5: the frames seen before the target
    # was added are read, each embedded once
    assert engine.cache_sizes()["clip_embeds"] == 5


def test_target_table_semantics(model: GLUSModel) -> None:
    engine = StreamingEngine(model, EngineConfig(max_targets=3))
    assert engine.add_target(TargetSpec("", "the red disk")) == "target_0"
    assert engine.add_target(TargetSpec("cup", "a blue cup", mode="point")) == "cup"
    assert engine.add_target(TargetSpec("", "a green ball")) == "target_1"
    with pytest.raises(ValueError, match="max_targets"):
        engine.add_target(TargetSpec("x", "one too many"))
    engine.remove_target("target_1")
    with pytest.raises(ValueError, match="already exists"):
        engine.add_target(TargetSpec("cup", "another cup"))
    before = engine.targets()
    for bad, match in ((TargetSpec("y", "   "), "empty expression"), (TargetSpec("y", "the [SEG] token"), "reserved"),
                       (TargetSpec("y", "ok", mode="laser"), "mode"), (TargetSpec("y", "x" * 500), "too long")):
        with pytest.raises(ValueError, match=match):
            engine.add_target(bad)
    with pytest.raises(ValueError, match="empty expression"):
        engine.replace_target(TargetSpec("cup", ""))
    assert engine.targets() == before
    with pytest.raises(UnknownTargetError, match=r"'nope'.*target_0, cup") as err:
        engine.remove_target("nope")
    assert isinstance(err.value, KeyError)
    with pytest.raises(UnknownTargetError, match="nope"):
        engine.replace_target(TargetSpec("nope", "a thing"))
    engine.replace_target(TargetSpec("cup", "the  mug", mode="both"))
    assert [(s.target_id, s.expression, s.mode, st) for s, st in engine.targets()] == [
        ("target_0", "the red disk", "mask", "grounding"), ("cup", "the mug", "both", "grounding")]
    result = engine.process(frame(0))
    assert [t.target_id for t in result.targets] == ["target_0", "cup"]
    engine.remove_target("target_0")
    assert [t.target_id for t in engine.process(frame(1)).targets] == ["cup"]
    engine.clear_targets()
    assert engine.targets() == [] and engine.process(frame(2)).targets == []


def test_submit_keeps_only_the_newest_frame_and_counts_drops(model: GLUSModel) -> None:
    release = threading.Event()
    results: list[FrameResult] = []
    done = threading.Semaphore(0)

    def on_result(result: FrameResult) -> None:
        results.append(result)
        assert threading.current_thread() is not threading.main_thread()
        if result.seq == 1:
            release.wait(10)  # keep the worker busy with frame 1
        done.release()

    engine = StreamingEngine(model, EngineConfig(), on_result=on_result)
    engine.add_target(TargetSpec("a", "the red disk"))
    engine.start()
    try:
        engine.submit(frame(0))
        deadline = time.monotonic() + 10
        while not results and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [r.seq for r in results] == [1]  # the worker is now blocked inside frame 1's callback
        for i in range(1, 6):
            t0 = time.perf_counter()
            engine.submit(frame(i))
            assert time.perf_counter() - t0 < 0.05  # never waits for the model
        time.sleep(0.2)
        release.set()
        assert done.acquire(timeout=10) and done.acquire(timeout=10)
        assert [r.seq for r in results] == [1, 6]
        assert results[1].frames_dropped == 4 and results[1].stamp == frame(5).stamp
        assert results[1].latency_ms >= 200  # counted from submit(), queueing included
        assert engine.stats == {"frames_in": 6, "frames_processed": 2, "frames_dropped": 4, "errors": 0}
    finally:
        release.set()
        engine.stop()
    assert not engine.running


def test_worker_survives_an_exception_and_keeps_processing(model: GLUSModel, caplog: pytest.LogCaptureFixture) -> None:
    results: list[FrameResult] = []
    got = threading.Semaphore(0)

    def on_result(result: FrameResult) -> None:
        results.append(result)
        got.release()

    engine = StreamingEngine(model, EngineConfig(schedule="full"), on_result=on_result)
    engine.add_target(TargetSpec("a", "the red disk"))
    with CallCounter(model, "track_steps") as sam_step:
        engine.start()
        try:
            engine.submit(frame(0))
            assert got.acquire(timeout=10)
            sam_step.fail.set()  # the next frame breaks inside SAM 2
            with caplog.at_level(logging.ERROR, logger="glus_ros.streaming.engine"):
                engine.submit(frame(1))
                deadline = time.monotonic() + 10
                while engine.stats["errors"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
            assert "injected fault" in caplog.text
            engine.submit(frame(2))
            assert got.acquire(timeout=10)
            assert engine.running
        finally:
            engine.stop()
    assert [r.seq for r in results] == [1, 3]
    assert engine.stats == {"frames_in": 3, "frames_processed": 2, "frames_dropped": 0, "errors": 1}


def test_frame_size_change_resets_and_regrounds(model: GLUSModel, mllm: CallCounter,
                                               caplog: pytest.LogCaptureFixture) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="fast", reground_below=0.0))
    engine.add_target(TargetSpec("a", "the red disk"))
    for i in range(3):
        engine.process(frame(i))
    assert mllm.batches == [1]
    small = moving_disk_clip(1, 64, 80)[0]
    with caplog.at_level(logging.WARNING, logger="glus_ros.streaming.engine"):
        result = engine.process(StreamFrame(small, stamp=1.0))
    assert "frame size changed" in caplog.text
    assert (result.width, result.height) == (80, 64) and result.targets[0].mask.shape == (64, 80)
    assert mllm.batches == [1, 1]  # re-grounded
    assert engine.cache_sizes()["history"] == 1 and engine.cache_sizes()["max_memory_entries"] == 1
    engine.reset()
    assert engine.cache_sizes()["history"] == 0 and engine.cache_sizes()["max_memory_entries"] == 0


def test_bad_frames_are_rejected_with_clear_errors(model: GLUSModel) -> None:
    engine = StreamingEngine(model)
    engine.add_target(TargetSpec("a", "the red disk"))
    image = CLIP[0]
    with pytest.raises(ValueError, match="uint8"):
        engine.process(StreamFrame(image.astype(np.float32), 0.0))
    with pytest.raises(ValueError, match=r"shape \(96, 128\)"):
        engine.process(StreamFrame(image[..., 0], 0.0))
    with pytest.raises(ValueError, match="depth is 64x48 but the image is 128x96"):
        engine.process(StreamFrame(image, 0.0, depth=np.ones((48, 64), np.float32)))
    with pytest.raises(ValueError, match="depth_from_16uc1"):
        engine.process(StreamFrame(image, 0.0, depth=np.ones((H, W), np.uint16)))
    with pytest.raises(ValueError, match="uint8"):
        engine.submit(StreamFrame(image.astype(np.float64), 0.0))  # rejected in the caller, never queued
    assert engine.stats["frames_in"] == 0
    assert engine.cache_sizes()["history"] == 0


def test_config_validation(model: GLUSModel) -> None:
    for kwargs, match in (({"schedule": "sometimes"}, "schedule"), ({"dtype": "fp8"}, "dtype"),
                          ({"reground_every": 0}, "reground_every"), ({"max_targets": 0}, "max_targets")):
        with pytest.raises(ValueError, match=match):
            EngineConfig(**kwargs)
    with pytest.raises(ValueError, match="history 2"):
        StreamingEngine(model, EngineConfig(history=2))


def test_bf16_runs(model: GLUSModel) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="full", dtype="bf16"))
    engine.add_target(TargetSpec("a", "the red disk"))
    for i in range(2):
        (out,) = engine.process(frame(i)).targets
        assert out.mask.shape == (H, W) and 0.0 <= out.score <= 1.0


def test_stop_joins_and_the_engine_restarts(model: GLUSModel) -> None:
    got: list[int] = []
    arrived = threading.Semaphore(0)
    engine = StreamingEngine(model, on_result=lambda r: (got.append(r.seq), arrived.release()))
    engine.add_target(TargetSpec("a", "the red disk"))
    engine.submit(frame(0))  # waits in the slot until the worker starts
    engine.start()
    engine.start()  # idempotent
    assert arrived.acquire(timeout=10)
    engine.stop()
    assert not engine.running
    engine.submit(frame(1))
    engine.stop()  # never started again: the pending frame is dropped and counted
    assert engine.stats["frames_dropped"] == 1
    engine.start()
    engine.submit(frame(2))
    assert arrived.acquire(timeout=10)
    engine.stop()
    assert got == [1, 3] and not engine.running


def test_point_head_points_on_grounding_frames_mask_points_in_between() -> None:
    """With a point head, grounding frames report the head's points (any number, in the image); tracking
    frames fall back to the mask's interior point."""
    import torch

    from glus_ros.model.point_head import decode_points

    pointing = load_model("tiny", overrides={"points": {"threshold": 1e-6}})  # every slot counts: 8 points
    engine = StreamingEngine(pointing, EngineConfig(schedule="fast", reground_every=3, reground_below=0.0))
    engine.add_target(TargetSpec("disk", "the red disk", mode="point"))
    for i in range(5):
        (out,) = engine.process(frame(i)).targets
        grounded = i % 3 == 0
        if grounded:
            assert len(out.points) == pointing.cfg.points.max_points
            assert all(0 <= x <= W and 0 <= y <= H for x, y in out.points)
        else:
            assert_mask_points(out)  # between groundings: the mask's components
    # the head's decoding is what the engine reports (same normalised points, scaled to pixels)
    raw = torch.zeros(1, 1, 2, 3)
    raw[0, 0, 0] = torch.tensor([0.0, 0.0, 5.0])     # (0.5, 0.5), present
    raw[0, 0, 1] = torch.tensor([0.0, 0.0, -5.0])    # absent
    assert decode_points(raw, 0.5)[0][0] == [(0.5, 0.5)]
