"""The concept engine (SAM 3) on a tiny random SAM 3 whose detector and tracker are forced by the frames' red disks.

What is checked: one output per instance under ``<id>/<k>``; an instance is born on its detection frame, keeps
its id while tracked, reads "lost" (same id) while hidden and is re-found under the same id, is forgotten after
``lost_frames`` (a later detection gives a new id); a new disk is a new id; counting answers with the instances
visible; the live schedule (detection in the worker) gives the same ids; a box becomes one instance; bad
requests fail when the command arrives. The forcing is ``helpers_sam3.ScriptedScene``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_sam3 import BLUE, RED, ScriptedScene, disk_frame, write_tiny_sam3

from glus_ros.backends.loading import load_backend
from glus_ros.model.region import Region
from glus_ros.streaming.build import load_stream_model, make_engine
from glus_ros.streaming.concept import ConceptStreamingEngine
from glus_ros.streaming.engine import EngineConfig
from glus_ros.streaming.types import StreamFrame, TargetSpec


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "sam3-tiny")


@pytest.fixture
def backend(folder):
    return load_backend(str(folder), overrides={"sam3": {"lost_frames": 4}})


@pytest.fixture
def scene(monkeypatch) -> ScriptedScene:
    return ScriptedScene(monkeypatch)


def _run(engine, centres_per_frame, colours=None) -> list[dict[str, tuple[str, int]]]:
    """Every frame's outputs as {id: (state, mask pixels)}."""
    seen = []
    for i, centres in enumerate(centres_per_frame):
        result = engine.process(StreamFrame(disk_frame(centres, colours), stamp=0.1 * i, seq=i))
        seen.append({t.target_id: (t.state, int(t.mask.sum())) for t in result.targets})
        if engine.live:
            assert engine.wait_grounded(30.0)
    return seen


def test_instances_are_born_tracked_lost_refound_and_forgotten(backend, scene):
    engine = make_engine(backend, EngineConfig(schedule="fast", reground_every=3))
    assert isinstance(engine, ConceptStreamingEngine)
    engine.add_target(TargetSpec("mugs", "the mugs"))
    left, right = (30.0, 40.0), (95.0, 55.0)
    frames = [[(left[0] + 2 * i, left[1]), right] for i in range(5)]          # both move / stay: ids kept
    frames += [[(40.0, 40.0)] for _ in range(3)]                              # the right one hidden: lost
    frames += [[(40.0, 40.0), right] for _ in range(2)]                       # back: re-found, same id
    frames += [[(40.0, 40.0)] for _ in range(6)]                              # hidden past lost_frames: forgotten
    frames += [[(40.0, 40.0), right] for _ in range(4)]                       # seen again: a new id
    seen = _run(engine, frames)
    assert seen[0] == {"mugs/0": ("grounding", seen[0]["mugs/0"][1]), "mugs/1": ("grounding", seen[0]["mugs/1"][1])}
    assert all(seen[0][k][1] > 300 for k in ("mugs/0", "mugs/1"))   # disks of radius 12: ~450 px
    for frame in seen[1:5]:
        assert {k: s for k, (s, _) in frame.items()} == {"mugs/0": "tracking", "mugs/1": "tracking"}
    for frame in seen[5:8]:
        assert frame["mugs/0"][0] == "tracking" and frame["mugs/1"] == ("lost", 0)
    for frame in seen[8:10]:
        assert frame["mugs/1"][0] == "tracking" and frame["mugs/1"][1] > 300
    assert "mugs/1" not in seen[15] and set(seen[15]) == {"mugs/0"}   # forgotten after lost_frames (4)
    assert set(seen[-1]) == {"mugs/0", "mugs/2"} and seen[-1]["mugs/2"][0] == "tracking"
    assert engine.cache_sizes()["history"] <= engine.config.history


def test_a_disk_entering_is_a_new_instance_and_other_objects_are_not(backend, scene):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.add_target(TargetSpec("m", "the mugs", mode="both"))
    frames = [[(30.0, 40.0), (95.0, 50.0)]] * 2 + [[(30.0, 40.0), (95.0, 50.0), (60.0, 75.0)]] * 2
    colours = [RED, BLUE, RED]   # the blue disk is no mug
    seen = []
    for i, centres in enumerate(frames):
        out = engine.process(StreamFrame(disk_frame(centres, colours[:len(centres)]), 0.1 * i, seq=i)).targets
        seen.append({t.target_id: t for t in out})
    assert set(seen[0]) == {"m/0"} and set(seen[2]) == {"m/0", "m/1"}
    assert seen[2]["m/1"].state == "grounding" and seen[3]["m/1"].state == "tracking"
    x, y = seen[3]["m/1"].point_2d
    assert abs(x - 60) < 4 and abs(y - 75) < 4
    assert not (seen[3]["m/0"].mask & seen[3]["m/1"].mask).any()


def test_counting_answers_with_the_visible_instances(backend, scene):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.add_target(TargetSpec("n", "how many mugs are there?"))
    frames = [[(20.0, 20.0), (60.0, 50.0), (100.0, 75.0)], [(20.0, 20.0), (60.0, 50.0)]]
    answers = []
    for i, centres in enumerate(frames):
        out = engine.process(StreamFrame(disk_frame(centres), 0.1 * i, seq=i)).targets
        answers.append({t.answer for t in out})
    assert answers == [{"3"}, {"2"}]
    assert engine.targets()[0][0].expression == "how many mugs are there?"


def test_nothing_found_is_one_output_under_the_target_id(backend, scene):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.add_target(TargetSpec("cups", "the cups"))
    out = engine.process(StreamFrame(disk_frame([(30.0, 30.0)], [BLUE]), 0.0, seq=0)).targets
    assert [(t.target_id, t.state, t.score) for t in out] == [("cups", "lost", 0.0)]


def test_live_schedule_detects_in_the_worker_with_the_same_ids(backend, scene):
    engine = make_engine(backend, EngineConfig(schedule="live", reground_every=2))
    engine.add_target(TargetSpec("mugs", "the mugs"))
    frames = [[(30.0 + i, 40.0), (95.0, 55.0)] for i in range(6)]
    try:
        seen = _run(engine, frames)
    finally:
        engine.stop()
    assert seen[0] == {"mugs": ("grounding", 0)}   # the first detection lands on the next frame
    assert set(seen[-1]) == {"mugs/0", "mugs/1"}
    assert all(s == "tracking" for s, _ in seen[-1].values())
    assert engine.grounding_stats["groundings"] >= 2 and scene.detections >= 2


def test_a_box_region_is_one_instance_from_the_trackers_geometric_prompt(backend, scene):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.process(StreamFrame(disk_frame([(30.0, 40.0), (95.0, 55.0)]), 0.0, seq=0))
    engine.add_target(TargetSpec("this", "", region=Region(80, 40, 110, 70)))
    seen = _run(engine, [[(30.0, 40.0), (95.0 + i, 55.0)] for i in range(3)])
    assert [set(f) for f in seen] == [{"this/0"}] * 3
    assert all(f["this/0"][1] > 300 for f in seen)
    assert scene.detections == 0   # no phrase: the detector never runs


@pytest.mark.parametrize(("expression", "message"), [
    ("", "empty"),
    ("how many?", "objects to count"),
    ("the " + "very " * 40 + "red mug", "at most 32"),
    ("what is on the table?", "grounded answer"),
])
def test_bad_requests_fail_when_the_command_arrives(backend, expression, message):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    with pytest.raises(ValueError, match=message):
        engine.add_target(TargetSpec("x", expression))
    assert engine.targets() == []


def test_the_node_loads_a_sam3_folder_through_the_stream_loader(folder):
    model = load_stream_model(str(folder))
    assert model.name == "sam3" and model.answers == "instances"
    engine = make_engine(model, EngineConfig(schedule="full"))   # the tracker node's warm-up, unpatched
    engine.add_target(TargetSpec("warm_up", "the object"))
    out = engine.process(StreamFrame(np.zeros((64, 64, 3), np.uint8), 0.0)).targets
    assert out and all(t.target_id == "warm_up" or t.target_id.startswith("warm_up/") for t in out)
    with pytest.raises(ValueError, match="not read with it"):
        load_stream_model(str(folder), sam2_checkpoint="x.pt")
