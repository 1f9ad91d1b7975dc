"""Point trackers for a pointing backend (Molmo2): SAM 2 (``--sam2-checkpoint``), SAM 3's tracker and EdgeTAM from
local folders (``--tracker DIR`` / ``molmo2.tracker``), each behind ``points.trackers.PointTracker``. Tiny random
models in the released layouts, nothing downloaded; Molmo2's answers are forced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_sam3 import write_tiny_sam3

from glus_ros.backends.loading import load_backend
from glus_ros.backends.molmo2 import Molmo2Backend
from glus_ros.backends.video_trackers import CACHED_FRAMES, VideoPointTracker, edgetam_missing, load_video_tracker
from glus_ros.cli import main as cli_main
from glus_ros.data.synth import write_split
from glus_ros.model.config import load_config
from glus_ros.model.sam2_tracker import SAM2Tracker, TrackerConfig
from glus_ros.points.coords import to_normalised
from glus_ros.points.propagation import PointPropagator, decode_point_anchor, normalised_anchors
from glus_ros.points.sam2_points import as_point_tracker
from glus_ros.points.text import format_video_points, parse_video_points
from glus_ros.streaming.build import make_engine
from glus_ros.streaming.engine import EngineConfig
from glus_ros.streaming.pointing import PointingStreamingEngine
from glus_ros.streaming.types import StreamFrame, TargetSpec

from helpers_model import moving_disk_clip
from helpers_molmo2 import answering, write_tiny_molmo2, write_tiny_sam2
from helpers_trackers import write_edgetam_folder, write_tiny_sam3_tracker

HEIGHT, WIDTH = 72, 96


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("point_trackers")
    write_split(root / "data", "valid", 1, seed=7)
    return {"molmo2": write_tiny_molmo2(root / "Molmo2-tiny"), "tracker": write_tiny_sam3_tracker(root / "sam3-trk"),
            "sam3": write_tiny_sam3(root / "sam3"), "sam2": write_tiny_sam2(root / "sam2.pt"),
            "edgetam": write_edgetam_folder(root / "EdgeTAM"),
            "video": sorted((root / "data" / "valid" / "JPEGImages").iterdir())[0]}


@pytest.fixture(scope="module")
def backend(files) -> Molmo2Backend:
    loaded = load_backend(files["molmo2"], overrides={"molmo2": {"tracker": str(files["tracker"])}})
    assert isinstance(loaded, Molmo2Backend) and isinstance(loaded.tracker, VideoPointTracker)
    return loaded


def disk_answer(t: int, time: float = 0.0) -> str:
    centre = (15.0 + 5 * t, 36.0)   # helpers_model.moving_disk_clip's disk on frame t
    return format_video_points([(time, [(1, to_normalised([centre], HEIGHT, WIDTH)[0])])], "circle")


def answer_points(text: str) -> list[tuple[float, float]]:
    return [(p.x, p.y) for p in parse_video_points(text)]


def test_the_sam2_tracker_behind_the_interface_computes_what_the_head_did():
    """Bit for bit: the anchor (decode_point_anchor + a fresh bank) and every later step (SAM2Head.step)."""
    torch.manual_seed(0)
    model = SAM2Tracker(TrackerConfig(load_config("tiny").sam2)).eval()
    tracker = as_point_tracker(model)
    clip = moving_disk_clip(num_frames=3)
    with torch.inference_mode():
        features = [tracker.encode(f) for f in clip]
        track = tracker.new_track()
        seeded = track.seed(features[0], [(15.0, 36.0), (60.0, 20.0)], HEIGHT, WIDTH)
        steps = [track.step(f) for f in features[1:]]
        forked = track.fork().step(features[1])
        anchor = decode_point_anchor(model.sam, features[0], [(15.0, 36.0), (60.0, 20.0)], HEIGHT, WIDTH)
        bank = model.new_memory_bank()
        bank.add(*anchor.memory)
        direct = [model.sam.step(f, bank, None) for f in features[1:]]
        again = model.new_memory_bank()
        again.add(*anchor.memory)
        first = model.sam.step(features[1], again, None)
    assert torch.equal(seeded.logits, anchor.logits) and torch.equal(seeded.low_res_logits, anchor.low_res_logits)
    for ours, theirs in zip(steps, direct, strict=True):
        assert torch.equal(ours.logits, theirs.logits) and torch.equal(ours.object_score, theirs.object_score)
    assert torch.equal(forked.logits, first.logits) and len(track) == len(bank)


def test_the_sam3_tracker_seeds_steps_forks_and_stays_bounded(files):
    tracker = load_video_tracker(files["tracker"])
    clip = moving_disk_clip(num_frames=14)
    with torch.inference_mode():
        features = [tracker.encode(f) for f in clip]
        track = tracker.new_track()
        anchor = track.seed(features[0], [(15.0, 36.0), (60.0, 20.0)], HEIGHT, WIDTH)
        assert len(track.tracks.ids) == 2   # each point its own prompt
        size = tracker.image_size
        assert anchor.logits.shape == (1, 1, size, size) and float(anchor.object_score) == 1.0
        steps = [track.step(f) for f in features[1:]]
        forked = track.fork()
        assert torch.equal(forked.step(features[1]).logits, steps[0].logits)   # a fork starts from the seed alone
        with pytest.raises(ValueError, match="seeded once"):
            track.seed(features[0], [(1.0, 1.0)], HEIGHT, WIDTH)
    assert all(s.low_res_logits.shape == anchor.low_res_logits.shape for s in steps)
    config = tracker.model.config
    # pruned as it goes: the seed, the frames memory and object pointers read, the frames whose features are kept
    kept = 1 + max(config.num_maskmem, config.max_object_pointers_in_encoder) + CACHED_FRAMES + 1
    assert len(track) == kept < len(clip)


def test_molmo2_streams_with_the_sam3_tracker_inline(backend):
    clip = moving_disk_clip(num_frames=2)
    engine = make_engine(backend, EngineConfig(schedule="full"))
    assert isinstance(engine, PointingStreamingEngine)
    engine.add_target(TargetSpec("c", "the red circle"))
    with answering(backend, disk_answer(0)):
        out = engine.process(StreamFrame(clip[0], stamp=0.0, seq=1)).targets[0]
    expected = PointPropagator(backend.tracker).segment(
        clip[:1], normalised_anchors({0: answer_points(disk_answer(0))}, HEIGHT, WIDTH))
    assert np.array_equal(out.mask, expected.masks[0])   # the same preprocessing and tracker: the same mask
    assert (out.state, out.score, out.grounded_seq) == ("grounding", 1.0, 1) and len(out.points) == 1


def test_molmo2_streams_with_the_sam3_tracker_live_memory_carries_the_points(backend):
    """Points made on frame 0 land later: they seed the tracker on frame 0, memory carries them to frames 1, 2
    exactly as the offline forward pass from an anchor on frame 0 does."""
    clip = moving_disk_clip(num_frames=3)
    engine = make_engine(backend, EngineConfig(schedule="live", reground_every=100, reground_below=0.0))
    engine.add_target(TargetSpec("c", "the red circle"))
    try:
        with answering(backend, disk_answer(0)):
            first = engine.process(StreamFrame(clip[0], stamp=0.0, seq=1)).targets[0]
            assert engine.wait_grounded(60.0)
        later = [engine.process(StreamFrame(clip[t], stamp=0.25 * t, seq=t + 1)).targets[0] for t in (1, 2)]
    finally:
        engine.stop()
    assert first.state == "grounding" and not first.mask.any()
    expected = PointPropagator(backend.tracker).segment(
        clip, normalised_anchors({0: answer_points(disk_answer(0))}, HEIGHT, WIDTH))
    for t, out in zip((1, 2), later, strict=True):
        assert np.array_equal(out.mask, expected.masks[t]), t
        assert abs(out.score - float(expected.scores[t])) < 1e-6 and out.state == "tracking"
        assert out.grounded_seq == 1 and out.grounding_age == t


@pytest.mark.parametrize("tracker", ["tracker", "sam3"])   # its own folder; the facebook/sam3 folder (sam3_video)
def test_segment_points_with_a_tracker_folder(files, tmp_path, capsys, tracker):
    out = tmp_path / "out"
    code = cli_main(["segment", "--model", str(files["molmo2"]), "--points", "--tracker", str(files[tracker]),
                     "--video", str(files["video"]), "--expr", "the red circle", "--out", str(out), "--no-overlay",
                     "--max-frames", "6"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.stem for p in out.glob("*.png")) == [f"{i:05d}" for i in range(6)]
    summary = json.loads((out / "result.json").read_text())
    assert summary["backend"] == "molmo2" and summary["frames"] == 6


def test_segment_points_with_a_tracker_propagates_forced_points_both_ways(files, backend):
    from glus_ros.backends.video import BackendPointPredictor
    from glus_ros.video_io import read_video

    frames, _, _ = read_video(str(files["video"]), 6)
    predictor = BackendPointPredictor(backend, fps=2.0)   # every frame shown (the folder allows 2 per second)
    shown = backend.sample_video(len(frames), predictor.fps)
    answer = format_video_points([(shown[2] / predictor.fps, [(1, (0.5, 0.5))])], "thing")
    with answering(backend, answer):
        pointed, predicted = predictor.segment(frames, "the thing")
    anchor = shown[2]
    assert pointed.anchors == [anchor] and predicted.points[anchor]
    assert pointed.sources[0] == (("backward", anchor),) and pointed.sources[-1] == (("forward", anchor),)
    assert pointed.scores[anchor] == 1.0 and pointed.masks.shape[0] == len(frames)


@pytest.mark.parametrize(("remove", "message"), [
    ("model.safetensors", "has no weights"),
    ("processor_config.json", "has no processor_config.json or preprocessor_config.json"),
    ("config.json", "has no config.json"),
])
def test_a_tracker_folder_with_a_missing_file_is_one_clear_error(files, tmp_path, capsys, remove, message):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in files["tracker"].iterdir():
        if item.name != remove:
            (broken / item.name).write_bytes(item.read_bytes())
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        load_video_tracker(broken)
    code = cli_main(["segment", "--model", str(files["molmo2"]), "--points", "--tracker", str(broken), "--video",
                     str(files["video"]), "--expr", "x", "--out", str(tmp_path / "o"), "--max-frames", "2"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(broken) in err and "Traceback" not in err


def test_tracker_errors_are_one_clear_line(files, tmp_path, capsys):
    base = ["segment", "--video", str(files["video"]), "--expr", "x", "--out", str(tmp_path / "o"), "--points",
            "--max-frames", "2", "--tracker", str(files["tracker"])]
    assert cli_main([*base, "--model", str(files["molmo2"]), "--sam2-checkpoint", str(files["sam2"])]) == 2
    assert "--sam2-checkpoint is not read with it" in capsys.readouterr().err
    assert cli_main([*base, "--model", "tiny"]) == 2
    assert "--tracker chooses a pointing backend's point tracker" in capsys.readouterr().err
    assert cli_main([*base[:-1], str(files["molmo2"]), "--model", str(files["molmo2"])]) == 2
    assert "model_type 'molmo2' is not a point tracker" in capsys.readouterr().err


@pytest.mark.skipif(not edgetam_missing(), reason="torchvision and timm import here: EdgeTAM can be built")
def test_edgetam_without_torchvision_or_timm_says_what_is_missing(files, tmp_path, capsys):
    with pytest.raises(ValueError, match="timm backbone") as caught:
        load_video_tracker(files["edgetam"])
    assert all(name in str(caught.value) for name in edgetam_missing())
    code = cli_main(["segment", "--model", str(files["molmo2"]), "--points", "--tracker", str(files["edgetam"]),
                     "--video", str(files["video"]), "--expr", "x", "--out", str(tmp_path / "o"), "--max-frames", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "torchvision" in err and "timm" in err and "Traceback" not in err
