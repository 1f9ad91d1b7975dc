"""The streaming engine's region targets ("track <region>") and question targets (grounded answers), tiny model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from glus_ros.inference import load_model
from glus_ros.model.glus import GLUSModel
from glus_ros.model.region import Region
from glus_ros.streaming import EngineConfig, FrameResult, StreamFrame, StreamingEngine, TargetOutput, TargetSpec

from helpers_model import MethodSpy, assert_mask_points, moving_disk_clip

H, W = 96, 128
CLIP = moving_disk_clip(12, H, W)
BOX = Region(20.0, 30.0, 50.0, 66.0)   # around the disk's first positions
POINT = Region.point(25.0, 48.0)


class Recorder(MethodSpy):
    """Records the arguments of one model method while calling the real method (and its results)."""

    def __init__(self, model: GLUSModel, name: str) -> None:
        super().__init__(model, name)
        self.calls: list[tuple[tuple, dict]] = []
        self.results: list = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        out = self.original(*args, **kwargs)
        self.results.append(out)
        return out



@pytest.fixture(scope="module")
def model() -> GLUSModel:
    return load_model("tiny")  # a private instance: tests wrap its methods


@pytest.fixture(scope="module")
def seg_model() -> GLUSModel:
    """The tiny model with an LM head that always says [SEG]: its answers ground something."""
    forced = load_model("tiny")
    head = nn.Linear(forced.vlm.hidden_size, forced.vlm.llava.lm_head.out_features, bias=True)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    head.bias.data[forced.prompts.seg_id] = 1.0
    forced.vlm.llava.lm_head = head
    return forced.eval()


@pytest.fixture()
def recorders(model: GLUSModel) -> Iterator[dict[str, Recorder]]:
    names = ("encode_regions", "grounded_prompts", "seg_prompts", "generate_answer")
    recs = {name: Recorder(model, name) for name in names}
    for rec in recs.values():
        rec.__enter__()
    try:
        yield recs
    finally:
        for rec in recs.values():
            rec.__exit__()


def frame(i: int) -> StreamFrame:
    return StreamFrame(image=CLIP[i % len(CLIP)], stamp=10.0 + i / 30)


def check_output(out: TargetOutput, grounded: bool) -> None:
    assert out.mask.shape == (H, W) and out.mask.dtype == bool and 0.0 <= out.score <= 1.0
    if out.score > 0.5:
        assert out.state == ("grounding" if grounded else "tracking") and out.bbox is not None
    else:
        assert out.state == "lost" and not out.mask.any()


def test_box_and_point_regions_track_with_the_embedding_of_their_first_grounding_frame(
        model: GLUSModel, recorders: dict[str, Recorder]) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=2, reground_below=0.0, history=8))
    for i in range(3):
        engine.process(frame(i))  # frames before the targets exist
    engine.add_target(TargetSpec("box", "", region=BOX))
    engine.add_target(TargetSpec("pt", "  the  disk ", mode="both", region=Region.point(25, 48, frame=7)))
    specs = [s for s, _ in engine.targets()]
    assert specs[0].expression == "" and specs[1].expression == "the disk"
    assert specs[0].region == BOX and specs[1].region == POINT  # frame means "current frame": 0
    results = [engine.process(frame(i)) for i in range(3, 8)]
    for k, result in enumerate(results):
        box, pt = result.targets
        assert (box.target_id, pt.target_id) == ("box", "pt")
        for out in (box, pt):
            check_output(out, grounded=k % 2 == 0)
            assert out.answer == "" and out.phrases == []
        assert_mask_points(pt)
    encode = recorders["encode_regions"]
    assert len(encode.calls) == 2  # once per target, on its first grounding frame only
    assert [regions for (_images, regions), _ in encode.calls] == [[BOX], [POINT]]
    assert all(images[0] is CLIP[3] for (images, _regions), _ in encode.calls)
    embeds = list(encode.results)
    # the embedding is the region on the newest frame at the first grounding, not on a later frame
    with torch.inference_mode():
        assert torch.allclose(embeds[0], encode.original([CLIP[3]], [BOX]), atol=1e-6)
        assert not torch.allclose(embeds[0], encode.original([CLIP[7]], [BOX]), atol=1e-4)
        assert not torch.allclose(embeds[0], embeds[1], atol=1e-4)
    # every grounding (frames 3, 5, 7) asks "track <region>" of both targets with the kept embeddings
    grounded = recorders["grounded_prompts"].calls
    assert len(grounded) == 3 and recorders["seg_prompts"].calls == []
    for args, kwargs in grounded:
        assert args[2] == ["track <region>"] * 2
        assert kwargs["region_embeds"][0] is embeds[0] and kwargs["region_embeds"][1] is embeds[1]
    # a reset forgets the memory but keeps what the target is
    engine.reset()
    assert [t.state for t in engine.process(frame(8)).targets] in (["grounding"] * 2, ["lost"] * 2,
                                                                     ["grounding", "lost"], ["lost", "grounding"])
    assert len(encode.calls) == 2 and len(grounded) == 4
    assert grounded[-1][1]["region_embeds"][0] is embeds[0]


def test_referring_targets_are_unchanged_by_region_and_question_targets(model: GLUSModel,
                                                                        recorders: dict[str, Recorder]) -> None:
    alone = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=2, reground_below=0.0))
    mixed = StreamingEngine(model, EngineConfig(schedule="fast", reground_every=2, reground_below=0.0,
                                                answer_tokens=4))
    alone.add_target(TargetSpec("disk", "the red disk"))
    mixed.add_target(TargetSpec("box", "", region=BOX))
    mixed.add_target(TargetSpec("disk", "the red disk"))
    mixed.add_target(TargetSpec("q", "what is moving?"))
    for i in range(4):
        ref = alone.process(frame(i)).targets[0]
        out = mixed.process(frame(i)).targets[1]
        assert out.target_id == "disk" and out.score == ref.score and np.array_equal(out.mask, ref.mask)
        assert out.state == ref.state and out.answer == "" and out.phrases == []
    # the referring path saw only the referring target (batch 1 in both engines, frames 0 and 2)
    assert [args[2] for args, _ in recorders["seg_prompts"].calls] == [["the red disk"]] * 4


def test_bad_regions_are_clear_errors_and_the_other_targets_keep_working(model: GLUSModel) -> None:
    engine = StreamingEngine(model)
    engine.add_target(TargetSpec("disk", "the red disk"))
    # wrong whatever the image size: refused before any frame
    for region, match in ((Region(40, 10, 20, 30), r"box \(40, 10, 20, 30\).*x1 < x0"),
                          (Region(10, 10, 10, 30), "zero area"), (Region(float("nan"), 0, 5, 5), "finite"),
                          (Region.point(-3, 4), "outside the image"), ((1, 2, 3, 4), "must be a Region")):
        with pytest.raises(ValueError, match=match):
            engine.add_target(TargetSpec("r", "", region=region))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty expression"):
        engine.add_target(TargetSpec("r", "  "))  # without a region an expression is still needed
    engine.process(frame(0))
    # the image size is known now: the bounds are checked at once
    with pytest.raises(ValueError, match=r"box \(100, 10, 200, 20\).*128x96 image.*outside the image"):
        engine.add_target(TargetSpec("far", "", region=Region(100, 10, 200, 20)))
    with pytest.raises(ValueError, match=r"point \(128, 5\).*outside the image"):
        engine.add_target(TargetSpec("far", "", region=Region.point(128, 5)))
    engine.add_target(TargetSpec("box", "", region=BOX))
    with pytest.raises(ValueError, match="outside the image"):
        engine.replace_target(TargetSpec("box", "", region=Region(0, 0, 129, 10)))
    assert [(s.target_id, s.region) for s, _ in engine.targets()] == [("disk", None), ("box", BOX)]
    assert [t.target_id for t in engine.process(frame(1)).targets] == ["disk", "box"]
    assert engine.stats["errors"] == 0


def test_a_region_that_does_not_fit_the_first_frame_drops_only_its_target(
        model: GLUSModel, caplog: pytest.LogCaptureFixture) -> None:
    results: list[FrameResult] = []
    got = threading.Semaphore(0)

    def on_result(result: FrameResult) -> None:
        results.append(result)
        got.release()

    engine = StreamingEngine(model, on_result=on_result)
    engine.add_target(TargetSpec("disk", "the red disk"))
    engine.add_target(TargetSpec("far", "", region=Region(100, 10, 200, 20)))  # no frame yet: accepted
    engine.add_target(TargetSpec("box", "", region=BOX))
    engine.start()
    try:
        with caplog.at_level(logging.ERROR, logger="glus_ros.streaming.engine"):
            engine.submit(frame(0))
            assert got.acquire(timeout=20)
        assert "dropping target 'far'" in caplog.text
        assert "box (100, 10, 200, 20) on frame 0 of a 128x96 image: the box reaches outside the image" in caplog.text
        assert [t.target_id for t in results[0].targets] == ["disk", "box"]
        assert [s.target_id for s, _ in engine.targets()] == ["disk", "box"]
        engine.submit(frame(1))
        assert got.acquire(timeout=20)
        assert [t.target_id for t in results[1].targets] == ["disk", "box"]
        assert engine.stats == {"frames_in": 2, "frames_processed": 2, "frames_dropped": 0, "errors": 1}
    finally:
        engine.stop()


def test_a_question_is_answered_once_and_its_answer_rides_on_every_frame(
        model: GLUSModel, recorders: dict[str, Recorder]) -> None:
    """Random weights: the text is arbitrary (here without a grounded phrase: no mask, never re-grounded)."""
    engine = StreamingEngine(model, EngineConfig(schedule="full", answer_tokens=6))
    engine.add_target(TargetSpec("q", "what  is moving?"))
    engine.add_target(TargetSpec("disk", "the red disk"))
    answers = []
    for i in range(4):
        q, disk = engine.process(frame(i)).targets
        assert q.expression == "what is moving?" and disk.answer == "" and disk.phrases == []
        answers.append((q.answer, q.phrases))
        for text, start, end in q.phrases:
            assert q.answer[start:end] == text
        if not q.phrases:
            assert q.state == "lost" and q.score == 0.0 and not q.mask.any() and q.point_2d is None
    assert all(answer == answers[0] for answer in answers)
    assert isinstance(answers[0][0], str)
    generated = recorders["generate_answer"]
    assert len(generated.calls) == 1 and generated.calls[0][0][2] == "what is moving?"
    assert generated.results[0].text == answers[0][0]
    if not answers[0][1]:
        assert recorders["grounded_prompts"].calls == []  # nothing to refresh


def test_a_counting_question_takes_the_referring_path_and_its_points_are_the_count(
        model: GLUSModel, recorders: dict[str, Recorder]) -> None:
    engine = StreamingEngine(model, EngineConfig(schedule="full", answer_tokens=6))
    engine.add_target(TargetSpec("n", "how many red disks are there?"))
    for i in range(2):
        (n,) = engine.process(frame(i)).targets
        assert n.answer == "" and n.phrases == []
    assert recorders["generate_answer"].calls == []
    assert [c[0][2] for c in recorders["seg_prompts"].calls][:1] == [["how many red disks are there?"]]


def test_a_question_tracks_the_first_grounded_phrase_of_its_answer(seg_model: GLUSModel) -> None:
    engine = StreamingEngine(seg_model, EngineConfig(schedule="fast", reground_every=2, reground_below=0.0,
                                                     answer_tokens=3))
    engine.add_target(TargetSpec("q", "which object moves?", mode="both"))
    with Recorder(seg_model, "generate_answer") as generate, Recorder(seg_model, "grounded_prompts") as forced:
        outs = [engine.process(frame(i)).targets[0] for i in range(5)]
    seg = seg_model.prompts.seg_id
    assert len(generate.calls) == 1 and generate.results[0].token_ids == [seg] * 3
    # three empty phrases ("it is [SEG]" style), in [SEG] order; the mask follows the first
    for k, out in enumerate(outs):
        assert out.answer == "" and out.phrases == [("", 0, 0)] * 3
        check_output(out, grounded=k % 2 == 0)
    # re-groundings (frames 2, 4) teacher-force the kept answer on the current window
    assert len(forced.calls) == 2
    for args, kwargs in forced.calls:
        assert args[2] == "which object moves?" and kwargs["answer_ids"] == [[seg] * 3]
    for out in outs:
        assert_mask_points(out)


def test_a_question_tracks_every_grounded_phrase_with_its_own_prompt_memory_and_output(seg_model: GLUSModel) -> None:
    engine = StreamingEngine(seg_model, EngineConfig(schedule="fast", reground_every=2, reground_below=0.0,
                                                     answer_tokens=3, max_targets=2))
    engine.add_target(TargetSpec("q", "which object moves?", mode="both"))
    engine.add_target(TargetSpec("disk", "the red disk"))  # max_targets counts targets, not phrases
    with pytest.raises(ValueError, match="phrases of a question"):  # a user id may not look like a phrase id
        engine.add_target(TargetSpec("q/phrase_1", "the red disk"))
    ids = ["q", "q/phrase_1", "q/phrase_2"]
    with Recorder(seg_model, "generate_answer") as generate, Recorder(seg_model, "grounded_prompts") as forced, \
            Recorder(seg_model, "track_steps") as track:
        results = [engine.process(frame(i)) for i in range(5)]
    # the answer is "[SEG] [SEG] [SEG]": three grounded phrases, one output each, then the plain target
    for k, result in enumerate(results):
        assert [t.target_id for t in result.targets] == [*ids, "disk"]
        for out in result.targets[:3]:
            assert out.expression == "which object moves?" and out.mode == "both"
            assert out.answer == "" and out.phrases == [("", 0, 0)] * 3 and out.phrase_target_ids == ids
            check_output(out, grounded=k % 2 == 0)
        disk = result.targets[3]
        assert disk.answer == "" and disk.phrases == [] and disk.phrase_target_ids == []
    # the same MLLM passes as with one tracked phrase: one generate, one teacher-forced pass per re-grounding
    assert len(generate.calls) == 1 and len(forced.calls) == 2
    # every frame decodes each phrase with its own [SEG] prompt and its own memory bank, no grounding map,
    # in one batched SAM 2 step with the other target
    target = engine._targets["q"]
    banks = [target.bank] + [p.bank for p in target.more]
    assert len(banks) == 3 and len({id(b) for b in banks}) == 3 and all(b is not None for b in banks)
    assert len(track.calls) == 5 and all(len(args[2]) == 4 for args, _ in track.calls)
    calls = [(row, None) for (_features, prompts, banks_of_call, grids), _ in track.calls
             for row in zip(prompts, banks_of_call, grids, strict=True) if any(row[1] is b for b in banks)]
    assert len(calls) == 3 * 5
    refreshed = {2: forced.results[0].prompts[0], 4: forced.results[1].prompts[0]}
    for i in range(5):
        source = generate.results[0].prompts if i < 2 else refreshed[2 if i < 4 else 4]
        for k in range(3):
            (prompt, bank, grounding), _ = calls[3 * i + k]
            assert bank is banks[k] and grounding is None
            assert torch.equal(prompt, source[k:k + 1])
    assert not torch.equal(source[0], source[1])  # different [SEG] tokens, different prompts
    # each bank holds only its own phrase's memories: one entry per frame, as a single target's bank
    single = StreamingEngine(seg_model, EngineConfig(schedule="fast", reground_every=2, reground_below=0.0))
    single.add_target(TargetSpec("disk", "the red disk"))
    for i in range(5):
        single.process(frame(i))
    assert [len(b) for b in banks] == [len(single._targets["disk"].bank)] * 3
    assert engine.cache_sizes()["max_memory_entries"] == len(banks[1])
    # a reset gives every phrase a fresh memory; the answer is kept and re-grounded by teacher forcing
    engine.reset()
    with Recorder(seg_model, "generate_answer") as generate, Recorder(seg_model, "grounded_prompts") as forced:
        after = engine.process(frame(5))
    assert [t.target_id for t in after.targets] == [*ids, "disk"]
    assert generate.calls == []
    assert [kwargs.get("answer_ids") for _args, kwargs in forced.calls] == [[[seg_model.prompts.seg_id] * 3]]
    fresh = [target.bank] + [p.bank for p in target.more]
    assert all(b is not old for b, old in zip(fresh, banks, strict=True)) and len({id(b) for b in fresh}) == 3
    assert [len(b) for b in fresh] == [1, 1, 1]
