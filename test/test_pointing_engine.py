"""The streaming engine with a pointing backend: a tiny random Molmo2 (released folder layout) whose answers are
forced, its points seeding SAM 2 on the frame they were made on and carried by memory to the newest frame."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from glus_ros.backends.loading import load_backend
from glus_ros.backends.molmo2 import Molmo2Backend
from glus_ros.model.region import Region
from glus_ros.points.coords import to_normalised
from glus_ros.points.labels import mask_iou
from glus_ros.points.propagation import PointPropagator, normalised_anchors
from glus_ros.points.text import format_video_points, parse_video_points
from glus_ros.streaming.build import load_stream_model, make_engine
from glus_ros.streaming.engine import EngineConfig, StreamingEngine
from glus_ros.streaming.pointing import PointingStreamingEngine
from glus_ros.streaming.types import StreamFrame, TargetSpec

from helpers_model import moving_disk_clip
from helpers_molmo2 import answering, write_default_sam2, write_tiny_molmo2
from helpers_ros import ros_session

HEIGHT, WIDTH = 72, 96
IOU_SAME = 0.95   # the same computation up to the 8-bit resize (0.974-1.0 measured)
ON_DISK = 0.9    # a point-prompted anchor mask lies on the disk (0.99; SAM 2 trained with [SEG] prompts covers part)
IOU_DISK = 0.85   # tracked from the anchor's memory, the default model's SAM 2 follows the disk (0.92-0.95)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    """A random tiny Molmo2 (its answers are forced) and, so that masks mean something, the SAM 2 of the shipped
    default model written as an official SAM 2 checkpoint."""
    root = tmp_path_factory.mktemp("molmo2_stream")
    return write_tiny_molmo2(root / "tiny"), write_default_sam2(root / "sam2.pt")


@pytest.fixture(scope="module")
def backend(files) -> Molmo2Backend:
    folder, sam2 = files
    loaded = load_backend(folder, sam2_checkpoint=sam2)
    assert isinstance(loaded, Molmo2Backend)
    return loaded


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return moving_disk_clip(num_frames=4)


def disk_answer(t: int, time: float = 0.0) -> str:
    """Molmo2's answer pointing at the disk of clip frame ``t``, printed at ``time`` (s from the first shown)."""
    centre = (15.0 + 5 * t, 36.0)
    return format_video_points([(time, [(1, to_normalised([centre], HEIGHT, WIDTH)[0])])], "circle")


def disk(t: int) -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (xx - (15 + 5 * t)) ** 2 + (yy - 36) ** 2 <= 100   # helpers_model.moving_disk_clip


def on_disk(mask: np.ndarray, t: int) -> float:
    """The share of the mask on frame t's disk."""
    return float((mask & disk(t)).sum() / max(mask.sum(), 1))


def frame(clip, t: int) -> StreamFrame:
    return StreamFrame(clip[t], stamp=0.25 * t, seq=t + 1)


def test_the_engine_follows_the_backend(files, backend):
    folder, sam2 = files
    assert isinstance(make_engine(backend, EngineConfig()), PointingStreamingEngine)
    loaded = load_stream_model(folder, sam2_checkpoint=sam2)
    assert isinstance(loaded, Molmo2Backend)
    glus = make_engine(load_stream_model("tiny"), EngineConfig())
    assert type(glus) is StreamingEngine


def test_inline_points_on_the_current_frame_are_its_mask(backend, clip):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.add_target(TargetSpec("c", "the red circle"))
    answer = disk_answer(0)
    with answering(backend, answer):
        out = engine.process(frame(clip, 0)).targets[0]
    assert backend.last_answers[0].text == answer
    # the anchor mask the offline point propagation makes of that point (the engine resizes the frame while it
    # is 8-bit, the offline path in float: less than a grey level apart)
    points = [(p.x, p.y) for p in parse_video_points(answer)]
    expected = PointPropagator(backend.tracker).segment(clip[:1], normalised_anchors({0: points}, HEIGHT, WIDTH))
    assert mask_iou(out.mask, expected.masks[0]) > IOU_SAME and on_disk(out.mask, 0) > ON_DISK
    assert (out.state, out.score, out.grounded_seq, out.grounding_age) == ("grounding", 1.0, 1, 0)
    assert len(out.points) == 1 and abs(out.points[0][0] - 15.0) < 0.6 and abs(out.points[0][1] - 36.0) < 0.6


def test_live_points_land_on_their_own_frame_and_memory_carries_them(backend, clip):
    engine = make_engine(backend, EngineConfig(schedule="live", reground_every=100, reground_below=0.0))
    engine.add_target(TargetSpec("c", "the red circle"))
    try:
        with answering(backend, disk_answer(0)):
            first = engine.process(frame(clip, 0)).targets[0]
            assert engine.wait_grounded(60.0)
        later = [engine.process(frame(clip, t)).targets[0] for t in (1, 2)]
    finally:
        engine.stop()
    assert first.state == "grounding" and not first.mask.any() and first.grounded_seq is None
    # the points were made on frame 0: they seed SAM 2 there, and frames 1, 2 are tracked from that memory,
    # the forward pass of the offline propagation from an anchor on frame 0
    points = [(p.x, p.y) for p in parse_video_points(disk_answer(0))]
    expected = PointPropagator(backend.tracker).segment(clip[:3], normalised_anchors({0: points}, HEIGHT, WIDTH))
    for t, out in zip((1, 2), later, strict=True):
        assert mask_iou(out.mask, expected.masks[t]) > IOU_SAME, t
        assert out.state == "tracking" and mask_iou(out.mask, disk(t)) > IOU_DISK, t   # it follows the disk
        assert abs(out.score - float(expected.scores[t])) < 0.01
        assert out.grounded_seq == 1 and out.grounding_age == t


def test_an_answer_without_points_loses_the_target_and_garbage_keeps_it_waiting(backend, clip):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.add_target(TargetSpec("c", "the red circle"))
    with answering(backend, "There are none."):
        absent = engine.process(frame(clip, 0)).targets[0]
    assert (absent.state, absent.score, absent.mask.any()) == ("lost", 0.0, False)
    other = make_engine(backend, EngineConfig(schedule="full"))
    other.add_target(TargetSpec("c", "the red circle"))
    with answering(backend, '<points coords="0.0 1 5'):   # cut off: nothing readable
        waiting = other.process(frame(clip, 0)).targets[0]
    assert waiting.state == "grounding" and not waiting.mask.any()
    with answering(backend, disk_answer(1, time=0.2)):    # the next answer is read (frame 1 is at 0.25 s)
        found = other.process(frame(clip, 1)).targets[0]
    assert found.state == "grounding" and on_disk(found.mask, 1) > ON_DISK and found.grounded_seq == 2


def test_requests_it_cannot_answer_are_refused_at_once(backend):
    engine = make_engine(backend, EngineConfig())
    with pytest.raises(ValueError, match="region target"):
        engine.add_target(TargetSpec("r", "", region=Region(1.0, 1.0, 10.0, 10.0)))
    with pytest.raises(ValueError, match="grounded answer to a question needs a GLUS model"):
        engine.add_target(TargetSpec("q", "what is moving left?"))
    with pytest.raises(ValueError, match="empty expression"):
        engine.add_target(TargetSpec("e", "   "))
    with pytest.raises(ValueError, match="reserved token"):
        engine.add_target(TargetSpec("t", "the <|im_end|> cup"))
    assert engine.add_target(TargetSpec("n", "how many circles are there?")) == "n"   # counting is pointing
    with pytest.raises(ValueError, match="yield_to_tracker"):
        PointingStreamingEngine(backend, EngineConfig(yield_to_tracker=True))


def test_the_video_shown_keeps_frames_the_backend_can_tell_apart():
    from glus_ros.streaming.pointing import spaced_frames

    steps, times = spaced_frames([0, 1, 2, 3, 4, 5], [0.0, 0.03, 0.07, 0.15, 0.25, 0.28], 0.105)
    assert steps == [1, 3, 5] and times == [0.03, 0.15, 0.28]   # walking back from the newest
    assert len({f"{t:.1f}" for t in times}) == 3 and spaced_frames([7], [1.0], 0.105) == ([7], [1.0])


def test_glus_ros_track_streams_with_the_molmo2_backend(files, tmp_path, tmp_path_factory):
    """The one-process runner (tracker node + synthetic camera) on the Molmo2 folder: the node picks the pointing
    engine from the folder and tracks every frame; the random model's answers never ground the target."""
    env = ros_session(tmp_path_factory)
    folder, sam2 = files
    proc = subprocess.run([sys.executable, "-m", "glus_ros.cli", "track", "--model", str(folder), "--sam2-checkpoint",
                           str(sam2), "--camera", "synth", "--expression", "the red circle", "--duration", "4"],
                          cwd=tmp_path, env=env.child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "PointingStreamingEngine" in proc.stderr, proc.stderr[-3000:]
    last = [line for line in proc.stdout.splitlines() if "results published" in line][-1]
    processed = int(last.split("processed ")[1].split(",")[0])
    published = int(last.split("results published ")[1].split(";")[0])
    assert processed > 0 and published == processed and "target_0: grounding" in last, proc.stdout


def test_a_counting_question_tracks_every_object_it_points_at(backend, clip):
    engine = make_engine(backend, EngineConfig(schedule="full"))
    engine.add_target(TargetSpec("n", "how many circles are there?", mode="point"))
    spots = [(15.0, 36.0), (70.0, 20.0)]   # the disk and a second one drawn here
    image = clip[0].copy()
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    image[(xx - 70) ** 2 + (yy - 20) ** 2 <= 64] = (230, 30, 30)
    answer = "Counting the " + format_video_points(
        [(0.0, [(k + 1, to_normalised([p], HEIGHT, WIDTH)[0]) for k, p in enumerate(spots)])], "circles"
    ) + " shows a total of 2."
    with answering(backend, answer):
        both = engine.process(StreamFrame(image, stamp=0.0, seq=1)).targets[0]
    assert backend.last_answers[0].text == answer
    assert len(both.points) == 2 and all(abs(a - b) < 0.6 for p, q in zip(both.points, spots, strict=True)
                                         for a, b in zip(p, q, strict=True))
    # every point is a prompt of the one target: its mask is the offline anchor mask of both points
    points = [(p.x, p.y) for p in parse_video_points(answer)]
    expected = PointPropagator(backend.tracker).segment([image], normalised_anchors({0: points}, HEIGHT, WIDTH))
    assert len(points) == 2 and mask_iou(both.mask, expected.masks[0]) > IOU_SAME
