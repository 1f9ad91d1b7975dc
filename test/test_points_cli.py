"""`glus-ros segment --points` and `glus-ros eval --points` on a real tiny model with a point head."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from glus_ros.cli import main as cli_main
from glus_ros.data.synth import write_split
from glus_ros.inference import load_model
from glus_ros.model.checkpoints import save_model_dir

from helpers_model import moving_disk_clip


@pytest.fixture(scope="module")
def pointing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pointing") / "model"
    save_model_dir(load_model("tiny", overrides={"points": {}}), folder)
    return folder


def test_segment_points_writes_masks_and_normalised_points(tmp_path: Path, pointing_model: Path, capsys):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(moving_disk_clip(num_frames=6)):
        cv2.imwrite(str(frames_dir / f"{i:05d}.jpg"), frame[..., ::-1])
    out = tmp_path / "out"
    code = cli_main(["segment", "--video", str(frames_dir), "--expr", "the red circle", "--out", str(out),
                     "--model", str(pointing_model), "--points", "--anchors", "2", "--no-overlay"])
    assert code == 0, capsys.readouterr().err
    points = json.loads((out / "points.json").read_text())["normalised_xy"]
    assert sorted(points) == [f"{i:05d}" for i in range(6)]
    for frame_points in points.values():
        assert all(0.0 <= c <= 1.0 for point in frame_points for c in point)
    assert len(list(out.glob("*.png"))) == 6
    # errors: the point head asked of a model without one, a bad anchor stride
    assert cli_main(["segment", "--video", str(frames_dir), "--expr", "x", "--out", str(out), "--points",
                     "--point-source", "head"]) == 2
    assert "has no point head" in capsys.readouterr().err
    assert cli_main(["segment", "--video", str(frames_dir), "--expr", "x", "--out", str(out), "--points",
                     "--model", str(pointing_model), "--anchors", "0"]) == 2
    assert "--anchors must be" in capsys.readouterr().err


def test_eval_points_reports_point_and_count_accuracy(tmp_path: Path, pointing_model: Path, capsys):
    write_split(tmp_path / "data", "valid", 1, seed=4)
    code = cli_main(["eval", "--model", str(pointing_model), "--data", str(tmp_path / "data"), "--points"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for line in ("point accuracy:", "count accuracy (every frame):", "J&F of point-prompted masks:"):
        assert line in out
    value = float(out.split("point accuracy:")[1].split()[0])
    assert 0.0 <= value <= 1.0
