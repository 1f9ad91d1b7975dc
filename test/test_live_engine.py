"""The live schedule: the tracker on every frame, the MLLM in its own worker (tiny model, a slowed MLLM)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.model.glus import GLUSModel
from glus_ros.streaming import EngineConfig, StreamFrame, StreamingEngine, TargetSpec

from helpers_model import MethodSpy, moving_disk_clip

H, W = 96, 128
CLIP = moving_disk_clip(40, H, W)


def frame(i: int) -> StreamFrame:
    return StreamFrame(image=CLIP[i % len(CLIP)], stamp=1.0 + i / 30, seq=i + 1)


class SlowMLLM(MethodSpy):
    """``seg_prompts`` that sleeps before answering (a 7B MLLM on a slow machine) and can be held back."""

    def __init__(self, model: GLUSModel, delay_s: float = 0.0) -> None:
        super().__init__(model, "seg_prompts")
        self.delay_s = delay_s
        self.hold = threading.Event()
        self.hold.set()          # cleared: the next pass waits until it is set again
        self.started = threading.Semaphore(0)
        self.results: list = []
        self.threads: set[str] = set()

    def __call__(self, *args, **kwargs):
        self.threads.add(threading.current_thread().name)
        self.started.release()
        self.hold.wait(30)
        time.sleep(self.delay_s)
        out = self.original(*args, **kwargs)
        self.results.append(out)
        return out


class Decodes(MethodSpy):
    """Records the prompts of every batched SAM 2 step (one call per frame)."""

    def __init__(self, model: GLUSModel) -> None:
        super().__init__(model, "track_steps")
        self.prompts: list[list[torch.Tensor]] = []

    def __call__(self, *args, **kwargs):
        self.prompts.append([p.clone() for p in args[1]])
        return self.original(*args, **kwargs)


@pytest.fixture(scope="module")
def model() -> GLUSModel:
    return load_model("tiny")  # a private instance: tests wrap its methods


@pytest.fixture()
def engine(model: GLUSModel) -> Iterator[StreamingEngine]:
    live = StreamingEngine(model, EngineConfig(schedule="live", reground_every=1, reground_below=0.0, history=16))
    yield live
    live.stop()


def test_a_new_target_reads_grounding_with_an_empty_mask_until_its_first_grounding_lands(
        model: GLUSModel, engine: StreamingEngine) -> None:
    engine.add_target(TargetSpec("disk", "the red disk"))
    with SlowMLLM(model) as mllm:
        mllm.hold.clear()
        (first,) = engine.process(frame(0)).targets
        assert first.state == "grounding" and not first.mask.any() and first.score == 0.0
        assert first.bbox is None and first.point_2d is None and first.points == []
        assert first.grounded_seq is None and first.grounding_age is None
        assert mllm.started.acquire(timeout=10)  # the worker grounds frame 0's window ...
        (second,) = engine.process(frame(1)).targets  # ... and the tracker does not wait for it
        assert second.state == "grounding" and second.grounded_seq is None
        mllm.hold.set()
        assert engine.wait_grounded(10)
        (third,) = engine.process(frame(2)).targets
    assert third.grounded_seq == 1 and third.grounding_age == 2  # computed on frame 0 (seq 1), applied to frame 2
    assert third.state in ("grounding", "lost")
    assert mllm.threads == {"glus-grounding-worker"}  # the MLLM never ran in the tracker's thread


def test_a_regrounded_prompt_lands_on_the_newest_frame_not_the_one_it_was_computed_on(
        model: GLUSModel, engine: StreamingEngine) -> None:
    engine.add_target(TargetSpec("disk", "the red disk"))
    with SlowMLLM(model) as mllm, Decodes(model) as decodes:
        engine.process(frame(0))
        assert engine.wait_grounded(10) and mllm.started.acquire(timeout=1)  # the first pass
        mllm.hold.clear()                       # the next grounding (on frame 1's window) is held back
        (out,) = engine.process(frame(1)).targets
        assert out.grounded_seq == 1           # frame 0's prompt, landed on frame 1
        assert mllm.started.acquire(timeout=10)
        held = [engine.process(frame(i)).targets[0] for i in range(2, 6)]
        assert [o.grounded_seq for o in held] == [1] * 4 and [o.grounding_age for o in held] == [2, 3, 4, 5]
        mllm.hold.set()
        deadline = time.monotonic() + 10
        while len(mllm.results) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # the worker hands the result to the target
        (landed,) = engine.process(frame(6)).targets
    assert landed.grounded_seq == 2 and landed.grounding_age == 5  # frame 1's window, decoded on frame 6
    assert landed.state in ("grounding", "lost")
    # frames 2-5 decoded with the old prompt, frame 6 with the one computed on frame 1's window, whose newest
    # frame is its query slot 1 (the window holds frames 0 and 1, padded with frame 1)
    old, newest = mllm.results[0].prompts[:, 0], mllm.results[1].prompts[:, 1]
    assert len(decodes.prompts) == 6  # frame 0 had no prompt to decode with
    assert all(torch.equal(p[0], old) for p in decodes.prompts[:5])
    assert torch.equal(decodes.prompts[5][0], newest) and not torch.equal(newest, old)


def test_the_tracker_keeps_its_rate_while_a_slowed_mllm_regrounds(model: GLUSModel) -> None:
    delay = 2.0
    config = EngineConfig(schedule="live", reground_every=1, reground_below=0.0, history=16)
    engine = StreamingEngine(model, config)
    engine.add_target(TargetSpec("disk", "the red disk"))
    try:
        with SlowMLLM(model, delay_s=delay) as mllm:
            engine.process(frame(0))
            assert engine.wait_grounded(delay + 20) and mllm.started.acquire(timeout=1)  # the first pass
            # idle worker: nothing is due between the frames of this run (reground_every is far away)
            engine.config.reground_every = 10_000
            engine.process(frame(1))  # applies the first grounding
            t0 = time.perf_counter()
            for i in range(2, 10):
                engine.process(frame(i))
            idle_s = time.perf_counter() - t0
            # busy worker: every frame is due, each pass takes `delay` seconds
            engine.config.reground_every = 1
            engine.process(frame(10))
            assert mllm.started.acquire(timeout=10)
            t0 = time.perf_counter()
            outs = [engine.process(frame(i)).targets[0] for i in range(11, 19)]
            busy_s = time.perf_counter() - t0
            passes_during = len(mllm.results)
    finally:
        engine.stop()
    # 8 tracker frames never waited for a pass that takes `delay` seconds, and kept their rate
    assert busy_s < delay
    assert busy_s < 2.0 * idle_s + 0.1, (busy_s, idle_s)
    assert all(o.grounded_seq is not None for o in outs)
    assert passes_during <= 2


def test_live_groundings_give_the_prompts_of_inline_groundings_one_frame_later(model: GLUSModel) -> None:
    """No drops (wait_grounded between frames): the prompt frame t decodes with is the one the inline "full"
    schedule computed on frame t - 1's window."""
    live = StreamingEngine(model, EngineConfig(schedule="live", reground_every=1, reground_below=0.0))
    full = StreamingEngine(model, EngineConfig(schedule="full"))
    for engine in (live, full):
        engine.add_target(TargetSpec("disk", "the red disk"))
    try:
        with Decodes(model) as decodes:
            for i in range(6):
                live.process(frame(i))
                assert live.wait_grounded(10)
            live_prompts = [p[0] for p in decodes.prompts]
            decodes.prompts.clear()
            for i in range(6):
                full.process(frame(i))
            full_prompts = [p[0] for p in decodes.prompts]
    finally:
        live.stop()
    assert len(live_prompts) == 5 and len(full_prompts) == 6  # live frame 0 had no prompt yet
    for t in range(1, 6):
        assert torch.allclose(live_prompts[t - 1], full_prompts[t - 1], atol=1e-5)


def test_a_reset_discards_groundings_computed_before_it(model: GLUSModel, engine: StreamingEngine) -> None:
    engine.add_target(TargetSpec("disk", "the red disk"))
    with SlowMLLM(model) as mllm:
        mllm.hold.clear()
        engine.process(frame(0))
        assert mllm.started.acquire(timeout=10)
        engine.reset()  # while the grounding of the old history is in flight
        mllm.hold.set()
        deadline = time.monotonic() + 10
        while engine.grounding_stats["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.005)
        (out,) = engine.process(frame(1)).targets
    assert out.grounded_seq is None and out.state == "grounding" and not out.mask.any()
    assert engine.wait_grounded(10)
    (out,) = engine.process(frame(2)).targets
    assert out.grounded_seq == 2  # grounded on the new history's first frame (seq 2)


def test_replace_and_remove_while_a_grounding_is_in_flight(model: GLUSModel, engine: StreamingEngine) -> None:
    engine.add_target(TargetSpec("a", "the red disk"))
    engine.add_target(TargetSpec("b", "the noise"))
    with SlowMLLM(model) as mllm:
        mllm.hold.clear()
        engine.process(frame(0))
        assert mllm.started.acquire(timeout=10)
        engine.replace_target(TargetSpec("a", "the disk on the left"))
        engine.remove_target("b")
        mllm.hold.set()
        assert engine.wait_grounded(20)
        outs = engine.process(frame(1)).targets
        assert [o.target_id for o in outs] == ["a"] and outs[0].expression == "the disk on the left"
        # the stale result for the old "a" was dropped; the new "a" got its own grounding
        assert outs[0].grounded_seq == 1 and len(mllm.results) == 2
    assert engine.stats["errors"] == 0


def test_the_worker_survives_an_mllm_fault(model: GLUSModel, engine: StreamingEngine) -> None:
    engine.add_target(TargetSpec("a", "the red disk"))

    class Faulty(MethodSpy):
        def __init__(self, m: GLUSModel) -> None:
            super().__init__(m, "seg_prompts")
            self.calls = 0

        def __call__(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("injected MLLM fault")
            return self.original(*args, **kwargs)

    with Faulty(model):
        engine.process(frame(0))
        assert engine.wait_grounded(10)
        (out,) = engine.process(frame(1)).targets
        assert engine.wait_grounded(10)
        (out,) = engine.process(frame(2)).targets
    assert out.grounded_seq is not None
    assert engine.grounding_stats["errors"] == 1 and engine.stats["errors"] == 1


def test_submit_and_start_run_both_loops_and_stop_joins_them(model: GLUSModel) -> None:
    got: list = []
    arrived = threading.Semaphore(0)
    engine = StreamingEngine(model, EngineConfig(schedule="live", reground_every=1),
                             on_result=lambda r: (got.append(r), arrived.release()))
    engine.add_target(TargetSpec("a", "the red disk"))
    engine.start()
    try:
        for i in range(12):
            engine.submit(frame(i))
            assert arrived.acquire(timeout=10)
            time.sleep(0.03)
    finally:
        engine.stop()
    assert not engine.running
    names = {t.name for t in threading.enumerate()}
    assert "glus-grounding-worker" not in names and "glus-streaming-engine" not in names
    assert any(r.targets[0].grounded_seq is not None for r in got)
    assert engine.grounding_stats["groundings"] >= 1


def test_config_validation_of_the_new_knobs() -> None:
    for kwargs, match in (({"context_refresh": 0}, "context_refresh"), ({"cpu_threads": -1}, "cpu_threads"),
                          ({"schedule": "later"}, "schedule"), ({"context_span": "future"}, "context_span")):
        with pytest.raises(ValueError, match=match):
            EngineConfig(**kwargs)
    assert EngineConfig(schedule="live").schedule == "live"


def test_masks_are_unchanged_by_the_batched_decode(model: GLUSModel) -> None:
    """All targets in one SAM 2 step give the masks of one step per target."""
    exprs = ["the red disk", "the noise", "the disk on the right"]
    together = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=3, reground_below=0.0))
    alone = [StreamingEngine(model, EngineConfig(schedule="fast", reground_every=3, reground_below=0.0))
             for _ in exprs]
    for i, text in enumerate(exprs):
        together.add_target(TargetSpec(f"t{i}", text))
        alone[i].add_target(TargetSpec(f"t{i}", text))
    for i in range(8):  # memory banks fill: the rows read the same slots from frame 1 on
        batched = together.process(frame(i)).targets
        for j, engine in enumerate(alone):
            single = engine.process(frame(i)).targets[0]
            assert batched[j].score == pytest.approx(single.score, abs=1e-4)
            assert np.mean(batched[j].mask != single.mask) < 0.005


def test_the_batched_step_keeps_the_official_switches() -> None:
    """With the released weights' SAM 2 switches (no temporal memory encoding, the memory encoder on the
    memory-conditioned features, the [SEG] embedding as the whole sparse prompt) one batched step for all
    tracks still gives each track's own step, memory writes included."""
    torch.manual_seed(0)
    official = load_model("tiny", overrides={"memory": {"temporal_pos_enc": False, "encoder_input": "conditioned"},
                                             "decoder": {"pad_point": False}}).eval()
    size = official.sam.image_size
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randn(1, official.sam.prompt_dim, generator=generator) for _ in range(3)]
    batched = [official.new_memory_bank() for _ in prompts]
    alone = [official.new_memory_bank() for _ in prompts]
    with torch.inference_mode():
        for _ in range(4):
            features = official.encode_sam_frames(torch.randn(1, 3, size, size, generator=generator))
            together = official.track_steps(features, prompts, batched, [None] * 3)
            for prompt, bank, pred in zip(prompts, alone, together, strict=True):
                single = official.track_step(features, prompt, bank)
                assert torch.allclose(pred.logits, single.logits, atol=1e-4)
                assert torch.allclose(pred.object_score, single.object_score, atol=1e-4)
    assert [len(b) for b in batched] == [len(b) for b in alone] == [4, 4, 4]
