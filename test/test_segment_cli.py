"""``glus-ros segment`` end to end on a generated clip (tiny model, CPU), and its bad-input errors."""

import json
import re

import cv2
import numpy as np
import pytest

from glus_ros.cli import main
from glus_ros.video_io import read_video, write_video

from helpers_model import moving_disk_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    for i, frame in enumerate(moving_disk_clip(7, height=60, width=88)):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_segment_frame_folder_writes_masks_overlay_and_summary(clip_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", "--video", str(clip_dir), "--expr", "the red circle", "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(7)]
    for p in pngs:
        mask = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (60, 88) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
    summary = json.loads((out / "result.json").read_text())
    assert summary["frames"] == 7 and summary["size"] == [88, 60] and len(summary["scores"]) == 7
    overlay_frames, _, _ = read_video(summary["overlay"])
    assert len(overlay_frames) == 7 and overlay_frames[0].shape == (60, 88, 3)
    assert "ms/frame" in capsys.readouterr().out


def test_segment_mp4_input_and_start_frame(tmp_path):
    video = write_video(tmp_path / "clip.mp4", moving_disk_clip(6, height=48, width=64), fps=10)
    out = tmp_path / "out"
    argv = ["segment", "--video", str(video), "--expr", "the red circle", "--out", str(out), "--start-frame", "3",
            "--no-overlay", "--dtype", "bf16"]
    assert main(argv) == 0
    assert len(list(out.glob("*.png"))) == 6 and not (out / "overlay.mp4").exists()
    assert json.loads((out / "result.json").read_text())["start_frame"] == 3


@pytest.mark.parametrize("case, match", [
    ("missing_video", "does not exist"),
    ("corrupt_video", "cannot open this video|no frames could be decoded"),
    ("empty_folder", "no image frames"),
    ("corrupt_frame", "cannot read this image"),
    ("empty_expression", "empty expression"),
    ("missing_model", "no model named 'nope'"),
    ("missing_checkpoint", "checkpoint .* does not exist"),
    ("bad_start", "outside the video"),
])
def test_segment_bad_input_is_one_clear_line(case, match, clip_dir, tmp_path, capsys):
    video, expr, extra = str(clip_dir), "the red circle", []
    if case == "missing_video":
        video = str(tmp_path / "nothing.mp4")
    elif case == "corrupt_video":
        (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 10)
        video = str(tmp_path / "bad.mp4")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        video = str(tmp_path / "empty")
    elif case == "corrupt_frame":
        folder = tmp_path / "frames"
        folder.mkdir()
        (folder / "00000.jpg").write_bytes(b"garbage")
        video = str(folder)
    elif case == "empty_expression":
        expr = "  "
    elif case == "missing_model":
        extra = ["--model", "nope"]
    elif case == "missing_checkpoint":
        extra = ["--checkpoint", str(tmp_path / "no_ckpt")]
    elif case == "bad_start":
        extra = ["--start-frame", "99"]
    out = tmp_path / "out"
    assert main(["segment", "--video", video, "--expr", expr, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glus-ros segment: error:")
    assert re.search(match, err[0]), err[0]
    assert not out.exists() or not any(out.iterdir())
