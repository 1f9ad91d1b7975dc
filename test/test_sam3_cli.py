"""``glus-ros segment`` and ``glus-ros track`` with a tiny SAM 3 folder, loaded through the normal CLI path.

``segment`` runs in this process with the scripted scene (``helpers_sam3.ScriptedScene``) so the instances are
known; ``track`` runs in its own process, where nothing can be patched: its folder's weights are set so that the
detector finds instances and the tracker keeps seeing them (``write_tiny_sam3(confident_detector=True,
visible_tracker=True)``), one detection only (``reground_every`` huge), and an rclpy client checks that every
message carries one TargetResult per instance, under ids ``<target>/<k>`` that stay the same from frame to frame.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_sam3 import ScriptedScene, disk_frame, write_tiny_sam3

from glus_ros.cli import main as cli_main
from glus_ros.video_io import read_mask_png

from helpers_ros import RosTestEnv, rclpy_context, ros_session, spin_until

WAIT_S = 120.0


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3_cli") / "sam3-tiny")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    root = tmp_path_factory.mktemp("sam3_video")
    for i in range(6):
        centres = [(30.0 + 3 * i, 40.0), (95.0, 60.0)] if i < 4 else [(42.0, 40.0)]
        cv2.imwrite(str(root / f"{i:05d}.png"), disk_frame(centres)[:, :, ::-1])
    return root


def test_segment_writes_one_mask_series_per_instance(folder, video, tmp_path, monkeypatch, capsys):
    ScriptedScene(monkeypatch)
    out = tmp_path / "out"
    code = cli_main(["segment", "--model", str(folder), "--video", str(video), "--expr", "how many mugs are there?",
                     "--out", str(out), "--no-overlay"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "result.json").read_text())
    assert summary["backend"] == "sam3" and summary["phrase"] == "mugs"
    assert [s["id"] for s in summary["instances"]] == ["target/0", "target/1"]
    assert summary["counts"] == [2, 2, 2, 2, 1, 1] and summary["answer"] == "1"
    assert [s["frames_seen"] for s in summary["instances"]] == [6, 4]
    names = [f"{i:05d}" for i in range(6)]
    assert sorted(p.stem for p in out.glob("*.png")) == names
    for k in ("0", "1"):
        assert sorted(p.stem for p in (out / "instances" / k).glob("*.png")) == names
    first, second = (read_mask_png(out / "instances" / k / "00000.png") for k in ("0", "1"))
    union = read_mask_png(out / "00000.png")
    assert first.sum() > 300 and second.sum() > 300 and not (first & second).any()
    assert np.array_equal(union, first | second)
    assert read_mask_png(out / "instances" / "1" / "00005.png").sum() == 0   # gone: lost, empty


@pytest.mark.parametrize(("extra", "message"), [
    (["--expr", ""], "empty"),
    (["--expr", "the mugs", "--points"], "--points"),
    (["--expr", "the mugs", "--sam2-checkpoint", "x.pt"], "not read with it"),
])
def test_segment_errors_are_one_clear_line(folder, video, tmp_path, capsys, extra, message):
    code = cli_main(["segment", "--model", str(folder), "--video", str(video), "--out", str(tmp_path / "o"), *extra])
    assert code != 0
    assert message in capsys.readouterr().err


def test_track_node_publishes_one_result_per_instance_across_processes(ros_test_env, tmp_path):
    import rclpy
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.executors import SingleThreadedExecutor

    from glus_ros.ros.qos import qos_profile

    forced = write_tiny_sam3(tmp_path / "sam3-forced", confident_detector=True, visible_tracker=True)
    command = [sys.executable, "-m", "glus_ros.cli", "track", "--model", str(forced), "--camera", "synth",
               "--expression", "the red circle", "--schedule", "fast", "--duration", "60",
               "-p", "reground_every:=100000", "-p", "reground_below:=0.0"]
    with rclpy_context() as context, ros_test_env.process(command) as tracker:
        executor = SingleThreadedExecutor(context=context)
        probe = rclpy.create_node("glus_sam3_probe", context=context)
        executor.add_node(probe)
        messages: list = []
        probe.create_subscription(TargetResultArray, "/glus/segmentation", messages.append,
                                  qos_profile("reliable", 50))
        with_instances = lambda: [m for m in messages if any("/" in r.target_id for r in m.results)]  # noqa: E731
        assert spin_until(executor, lambda: len(with_instances()) >= 4, WAIT_S, tracker), tracker.describe()
        executor.shutdown(timeout_sec=1.0)
        probe.destroy_node()
    frames = with_instances()
    ids = [[r.target_id for r in m.results] for m in frames]
    assert all(i.startswith("target_0/") and i.split("/")[1].isdigit() for frame in ids for i in frame)
    assert all(len(frame) == len(set(frame)) for frame in ids)            # one TargetResult per instance
    assert all(frame == ids[0] for frame in ids)                          # the same ids, frame after frame
    assert all(len(r.mask.data) == r.mask.width * r.mask.height for m in frames for r in m.results)
