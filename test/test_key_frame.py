"""Key-frame selector: pseudo-labels, learning from them, choosing the start frame, saving with the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glus_ros.cli import main as cli_main
from glus_ros.inference import VideoSegmenter, load_model
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.training.key_frame import KeyFrameExample, frame_ious, train_selector

LATE = 8  # the disk appears from this frame on


def late_disk_video(num_frames: int = 16, size: int = 64) -> list[np.ndarray]:
    """Noise; a red disk appears half way and moves right (visible only late)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for t in range(num_frames):
        frame = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        if t >= LATE:
            frame[(xx - 10 - 4 * (t - LATE)) ** 2 + (yy - 32) ** 2 <= 90] = (230, 30, 30)
        frames.append(frame)
    return frames


class OneVideoReader:
    """The reader interface of the training code over one in-memory video."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self._frames = frames

    def frames(self, video: str) -> list[str]:
        return [f"{i:05d}" for i in range(len(self._frames))]

    def load_frame(self, video: str, frame: str) -> np.ndarray:
        return self._frames[int(frame)]


def test_frame_ious_by_hand():
    gt = np.zeros((3, 4, 4), bool)
    pred = np.zeros((3, 4, 4), bool)
    gt[0, :2, :2] = True          # 4 px
    pred[0, :2, :3] = True        # 6 px, 4 shared -> 4/6
    pred[1, 0, 0] = True          # object absent: 0 even though the prediction is wrong anyway
    gt[2] = True
    pred[2] = True                # perfect
    np.testing.assert_allclose(frame_ious(pred, gt), [4 / 6, 0.0, 1.0], rtol=1e-6)


def test_selector_learns_where_the_object_is_and_starts_there(tmp_path: Path):
    frames = late_disk_video()
    reader = OneVideoReader(frames)
    labels = np.array([0.0] * LATE + [0.9] * (len(frames) - LATE), dtype=np.float32)
    examples = [KeyFrameExample("v", "the red circle", labels)]
    model = load_model("tiny")
    history = train_selector(model, reader, examples, epochs=60, lr=3e-3, progress=False)
    assert history[-1] < 0.5 * history[0]
    segmenter = VideoSegmenter(model)
    scores = segmenter.key_frame_scores(frames, "the red circle")
    assert scores[LATE:].min() > scores[:LATE].max()
    result = segmenter.segment(frames, "the red circle", key_frame=True)
    assert result.start_frame >= LATE and result.start_frame == int(np.argmax(scores))
    np.testing.assert_allclose(result.key_frame_scores, scores, rtol=1e-5)

    # saved with the model: the config names the selector and a reload scores the same
    save_model_dir(model, tmp_path / "m")
    assert "key_frame:" in (tmp_path / "m" / "config.yaml").read_text()
    again = VideoSegmenter(load_model(tmp_path / "m")).key_frame_scores(frames, "the red circle")
    np.testing.assert_allclose(again, scores, rtol=1e-5, atol=1e-6)


def test_key_frame_without_a_selector_is_a_clear_error(tmp_path: Path, capsys):
    frames = late_disk_video(num_frames=4)
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), f[..., ::-1])
    code = cli_main(["segment", "--video", str(folder), "--expr", "the red circle", "--out", str(tmp_path / "o"),
                     "--model", "tiny", "--key-frame"])
    assert code == 2
    assert "no trained key-frame selector" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no trained key-frame selector"):
        VideoSegmenter(load_model("tiny")).segment(frames, "the red circle", key_frame=True)
    with torch.no_grad(), pytest.raises(ValueError, match="no trained key-frame selector"):
        load_model("tiny").key_frame_logits(torch.zeros(2, 16, 192), "x")
