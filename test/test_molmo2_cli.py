"""``glus-ros segment --model <Molmo2 folder> --points`` end to end on a synthetic clip, and its clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glus_ros.cli import main as cli_main
from glus_ros.data.synth import write_split

from helpers_molmo2 import write_tiny_molmo2, write_tiny_sam2


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("molmo2_cli")
    write_split(root / "data", "valid", 1, seed=7)
    video = sorted((root / "data" / "valid" / "JPEGImages").iterdir())[0]
    return {"folder": write_tiny_molmo2(root / "Molmo2-tiny"), "sam2": write_tiny_sam2(root / "sam2_tiny.pt"),
            "video": video}


def test_segment_points_with_a_molmo2_folder_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["segment", "--model", str(files["folder"]), "--points", "--sam2-checkpoint",
                     str(files["sam2"]), "--video", str(files["video"]), "--expr", "the red circle",
                     "--out", str(out), "--no-overlay", "--max-frames", "8"])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.stem for p in out.glob("*.png"))
    assert names == [f"{i:05d}" for i in range(8)]
    summary = json.loads((out / "result.json").read_text())
    assert summary["backend"] == "molmo2" and summary["frames"] == 8
    assert isinstance(summary["answer"], str) and summary["count"] >= 0   # a random model: garbage, read safely
    points = json.loads((out / "points.json").read_text())["normalised_xy"]
    assert sorted(points) == names
    assert all(0.0 <= c <= 1.0 for frame in points.values() for point in frame for c in point)
    if not any(points.values()):   # nothing readable: the target is lost everywhere, said so
        assert summary["anchors"] == [] and all(s == 0 for s in summary["scores"])
    # the same model as a named config plus its folder
    code = cli_main(["segment", "--model", "molmo2", "--checkpoint", str(files["folder"]), "--points",
                     "--sam2-checkpoint", str(files["sam2"]), "--video", str(files["video"]), "--expr",
                     "how many circles are there", "--out", str(tmp_path / "count"), "--no-overlay",
                     "--max-frames", "4", "--anchors", "all"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--points"], "--sam2-checkpoint"),                                    # no SAM 2 checkpoint
    (["--points", "--sam2-checkpoint", "missing.pt"], "does not exist"),
    ([], "add --points"),
    (["--points", "--region", "1,1,20,20"], "--region"),
    (["--points", "--key-frame"], "--key-frame"),
    (["--points", "--anchors", "0"], "--anchors must be"),
])
def test_segment_with_molmo2_errors_are_one_clear_line(files, tmp_path, capsys, extra, message):
    args = ["segment", "--model", str(files["folder"]), "--video", str(files["video"]), "--expr", "the red circle",
            "--out", str(tmp_path / "out"), "--max-frames", "2", *extra]
    if "--sam2-checkpoint" not in extra and extra != ["--points"]:
        args += ["--sam2-checkpoint", str(files["sam2"])]
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err


def test_segment_with_a_missing_or_wrong_model_folder(files, tmp_path, capsys):
    base = ["segment", "--video", str(files["video"]), "--expr", "x", "--out", str(tmp_path / "o"), "--points",
            "--sam2-checkpoint", str(files["sam2"]), "--max-frames", "2"]
    assert cli_main([*base, "--model", str(tmp_path / "no" / "Molmo2-4B")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main([*base, "--model", str(empty)]) == 2
    assert "neither config.yaml" in capsys.readouterr().err
    assert cli_main([*base, "--model", "molmo2"]) == 2
    assert "--checkpoint DIR" in capsys.readouterr().err
    assert cli_main([*base, "--model", "molmo2", "--checkpoint", str(empty)]) == 2
    assert "no config.json" in capsys.readouterr().err
