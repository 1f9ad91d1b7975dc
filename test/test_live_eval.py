"""Live replay evaluation: causal frame-by-frame masks through the streaming engine, scored like offline eval."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from glus_ros.cli import main
from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import write_split
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.inference import load_model
from glus_ros.live_eval import predict_dataset_live, replay_expression
from glus_ros.metrics import video_j_f
from glus_ros.model.glus import GLUSModel
from glus_ros.streaming import EngineConfig

LIVE = EngineConfig(schedule="live", reground_every=1, reground_below=0.0, context_refresh=4)


@pytest.fixture(scope="module")
def model() -> GLUSModel:
    return load_model("glus-tiny-synth")  # trained: its masks are not empty, so the scores mean something


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> MevisDataset:
    root = tmp_path_factory.mktemp("live")
    write_split(root, "valid", 1, seed=777_101, config=SynthConfig(frames=8))  # a seed never used for training
    return MevisDataset(root, "valid")


def video(split: MevisDataset) -> tuple[list[np.ndarray], str, np.ndarray]:
    expr = split.expressions()[0]
    frames = [split.load_frame(expr.video, f) for f in split.frames(expr.video)]
    return frames, expr.text, split.gt_masks(expr)


def test_a_no_drop_replay_is_causal_and_deterministic(model: GLUSModel, split: MevisDataset) -> None:
    frames, text, _gt = video(split)
    whole, stats = replay_expression(model, LIVE, frames, text)
    again, _ = replay_expression(model, LIVE, frames, text)
    first, _ = replay_expression(model, LIVE, frames[:5], text)  # the future never reaches the past
    assert np.array_equal(whole.masks, again.masks)
    assert np.array_equal(whole.masks[:5], first.masks)
    assert whole.answered.all()                     # no drops: every frame has its own result
    assert not whole.grounded[0] and whole.grounded[1:].all()  # frame 0 waits for the first MLLM pass
    assert not whole.masks[0].any() and whole.masks[1:].any()
    assert stats["groundings"] >= len(frames) - 1   # one MLLM pass per frame, each landing on the next


def test_a_replay_at_a_camera_rate_holds_the_last_mask_for_dropped_frames(model: GLUSModel,
                                                                          split: MevisDataset) -> None:
    frames, text, _gt = video(split)
    replay, _ = replay_expression(model, LIVE, frames * 3, text, rate_hz=500.0)  # faster than the tracker
    assert replay.answered[0] and not replay.answered.all()
    last = None
    for i, answered in enumerate(replay.answered):
        if answered:
            last = i
        else:
            assert np.array_equal(replay.masks[i], replay.masks[last])  # what the robot still holds
    assert len(replay.latencies_ms) == int(replay.answered.sum())


def test_live_predictions_are_scored_like_offline_ones(model: GLUSModel, split: MevisDataset, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    frames, text, gt = video(split)
    replay, _ = replay_expression(model, LIVE, frames, text)
    j, f = video_j_f(replay.masks, gt)
    expected = [(j + f) / 2]
    stats = predict_dataset_live(model, split, tmp_path / "pred", LIVE, progress=False)
    assert stats.frames == len(frames) * len(split.expressions()) and stats.answered == stats.frames
    out = tmp_path / "cli"
    argv = ["eval", "--live", "--model", "glus-tiny-synth", "--data", str(split.root), "--split", "valid",
            "--out", str(out), "--context-refresh", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "live replay (live schedule, no drops" in printed and "frames answered:" in printed
    with (out / "eval_valid.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(split.expressions())
    assert float(rows[0]["J&F"]) == pytest.approx(expected[0], abs=1e-6)


def test_eval_live_needs_a_model(split: MevisDataset, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", "--live", "--pred", str(tmp_path), "--data", str(split.root), "--split", "valid"]
    assert main(argv) == 2
    assert "--live replays a model" in capsys.readouterr().err
