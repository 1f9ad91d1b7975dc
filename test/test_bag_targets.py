"""Bags keep what the tracker was told: ``glus-ros record`` (default topics, zstd) across processes, then
``convert-bag`` takes the targets from /glus/targets snapshots or, when none were recorded, from the
expressions in the results; compressed bags read back; bags without targets are clear errors."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glus_ros.cli import main as cli_main
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.recording.bag_to_dataset import BagMessages, convert_bag
from glus_ros.recording.topics import DEFAULT_RECORD_TOPICS, TARGETS_TOPIC, topics_to_record

from helpers_ros import RosTestEnv, ros_session

WAIT_S = 30.0
FRAMES = 16
H, W = 24, 32  # as test/ros_children/publish_session.py


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def _expected_mask(i: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[:, i % W : i % W + 4] = True
    return mask


def _record_session(ros_test_env: RosTestEnv, bag: Path, mode: str, *record_args: str) -> str:
    """Start the session publisher, then ``glus-ros record --out bag`` (default topics); stop the recorder with
    SIGINT once the publisher has finished and every message was acknowledged. Returns the recorder's stderr."""
    with ros_test_env.child("publish_session.py", mode, str(FRAMES), str(WAIT_S)) as session:
        with ros_test_env.child("run_recorder.py", "90", "--out", str(bag), *record_args) as recorder:
            assert session.proc is not None
            try:
                session.proc.wait(WAIT_S + 10)
            except Exception:
                raise AssertionError(f"{session.describe()}\n{recorder.describe()}") from None
            assert session.proc.returncode == 0, f"{session.describe()}\n{recorder.describe()}"
            assert recorder.signal_and_wait(signal.SIGINT) == 0, recorder.describe()
            return recorder.stderr_text()


def _check_two_videos(out: Path, source: str) -> None:
    dataset = MevisDataset(out, "train")
    videos = dataset.videos()
    assert len(videos) == 2, videos
    first, second = (next(e for e in dataset.expressions() if e.video == v) for v in videos)
    assert (first.text, second.text) == ("the red cup", "the blue box")
    assert [len(dataset.frames(v)) for v in videos] == [FRAMES // 2, FRAMES - FRAMES // 2]
    for k, mask in enumerate(dataset.gt_masks(second)):
        np.testing.assert_array_equal(mask, _expected_mask(FRAMES // 2 + k))
    frame = dataset.load_frame(videos[0], dataset.frames(videos[0])[3]).astype(int)
    assert abs(frame.mean() - 21) < 3  # image 3 is a flat (3 * 7) grey, JPEG keeps it close
    provenance = json.loads((out / "train" / "bag_source.json").read_text())
    assert provenance["targets_source"] == source


def test_latched_snapshot_recorded_late_converts(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """The first snapshot is published before the recorder exists (latched), the second mid-stream; the bag is
    zstd mcap by default and convert-bag takes the expressions from the snapshots by header stamp."""
    bag = tmp_path / "bag"
    log = _record_session(ros_test_env, bag, "snapshots")
    reader = BagMessages(bag)
    try:
        assert set(reader.topics) == {"/camera/image_raw", "/glus/segmentation", TARGETS_TOPIC}, log
        snapshots = [m for _t, _m, _ns, m in reader.messages([TARGETS_TOPIC])]
        assert len(list(reader.messages(["/camera/image_raw"]))) == FRAMES
    finally:
        reader.close()
    assert [[c.expression for c in s.commands] for s in snapshots] == [["the red cup"], ["the blue box"]]
    assert b"zstd" in (bag / "bag.mcap").read_bytes(), "default: zstd-compressed mcap chunks"
    summary = convert_bag(bag, tmp_path / "data", label_topic="/glus/segmentation")
    assert (summary.targets_source, summary.commands, summary.frames) == ("snapshots", 2, FRAMES)
    _check_two_videos(tmp_path / "data", "snapshots")


def test_results_only_bag_converts_with_their_expressions(ros_test_env: RosTestEnv, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """No targets topic and no command in the bag (an older tracker, or targets set by --expression): the
    expressions the results carry are the targets; the raw sqlite3 bag converts through the CLI."""
    bag = tmp_path / "bag"
    _record_session(ros_test_env, bag, "results", "--storage", "sqlite3", "--compression", "none")
    assert "compression_mode: ''" in (bag / "metadata.yaml").read_text()
    out = tmp_path / "data"
    assert cli_main(["convert-bag", str(bag), "--out", str(out), "--label-topic", "/glus/segmentation"]) == 0
    assert "targets from results" in capsys.readouterr().out
    _check_two_videos(out, "results")


def test_compressed_bags_round_trip(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """zstd mcap (chunks) and zstd sqlite3 (messages, also without metadata.yaml as after a crash) read back
    byte-identical, and are smaller than the raw bag."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from glus_ros.recording.recorder import BagSink

    messages = []
    for i in range(20):
        image = Image(height=48, width=64, encoding="rgb8", step=192, data=bytes([i, 0, 255]) * (48 * 64))
        image.header.stamp.sec = i
        messages.append(serialize_message(image))
    sizes: dict[tuple[str, str], int] = {}
    for storage in ("mcap", "sqlite3"):
        for compression in ("zstd", "none"):
            bag = tmp_path / f"{storage}_{compression}"
            sink = BagSink(bag, storage, compression=compression)
            sink.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
            for i, data in enumerate(messages):
                sink.write("/camera/image_raw", 1000 + i, data)
            sink.close()
            sizes[storage, compression] = sum(p.stat().st_size for p in bag.iterdir())
            paths = [bag]
            if storage == "sqlite3":  # a killed recorder leaves no metadata.yaml: the zstd frames are still read
                crashed = tmp_path / f"crashed_{compression}"
                crashed.mkdir()
                (crashed / "x.db3").write_bytes((bag / f"{bag.name}.db3").read_bytes())
                paths.append(crashed)
            for path in paths:
                reader = BagMessages(path)
                try:
                    read = [msg for _t, _m, _ns, msg in reader.messages(["/camera/image_raw"])]
                finally:
                    reader.close()
                assert [bytes(m.data) for m in read] == [bytes([i, 0, 255]) * (48 * 64) for i in range(20)], path
        assert sizes[storage, "zstd"] * 5 < sizes[storage, "none"], sizes
    with pytest.raises(ValueError, match="compression must be one of zstd, none"):
        BagSink(tmp_path / "never", "mcap", compression="lz4")


def _bag_with(path: Path, topics: dict[str, str], messages: list[tuple[str, Any]]) -> None:
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer

    from glus_ros.recording.typestore import glus_typestore

    typestore = glus_typestore()
    with Writer(path, version=8) as writer:
        connections = {t: writer.add_connection(t, m, typestore=typestore) for t, m in topics.items()}
        for i, (topic, msg) in enumerate(messages):
            writer.write(connections[topic], 1000 + i, serialize_message(msg))


def test_bags_without_targets_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from glus_ros_msgs.msg import TargetResultArray
    from sensor_msgs.msg import Image

    empty = tmp_path / "empty"
    _bag_with(empty, {}, [])
    with pytest.raises(ValueError, match=f"bag {empty} holds no topics"):
        convert_bag(empty, tmp_path / "out")

    image = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
    no_targets = tmp_path / "no_targets"
    _bag_with(no_targets, {"/camera/image_raw": "sensor_msgs/msg/Image",
                           "/glus/commands": "glus_ros_msgs/msg/ReferringCommandArray",  # recorded, but empty
                           "/glus/segmentation": "glus_ros_msgs/msg/TargetResultArray"},
              [("/camera/image_raw", image), ("/glus/segmentation", TargetResultArray())])
    assert cli_main(["convert-bag", str(no_targets), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    for named in ("/glus/targets", "/glus/command and /glus/commands", "/glus/segmentation", "--expression"):
        assert named in err, err
    assert err.startswith(f"glus-ros convert-bag: error: no targets in bag {no_targets}") and "Traceback" not in err
    with pytest.raises(ValueError, match=r"no command in bag .* on /glus/commands"):
        convert_bag(no_targets, tmp_path / "out", command_topic=["/glus/commands"])
    assert not (tmp_path / "out" / "train").exists()
    assert convert_bag(no_targets, tmp_path / "out", expression="the cup").frames == 1

    truncated = tmp_path / "truncated"
    _bag_with(truncated, {"/camera/image_raw": "sensor_msgs/msg/Image"}, [("/camera/image_raw", image)] * 3)
    db3 = truncated / "truncated.db3"
    db3.write_bytes(db3.read_bytes()[:1000])
    assert cli_main(["convert-bag", str(truncated), "--out", str(tmp_path / "never")]) == 2
    assert capsys.readouterr().err.startswith(f"glus-ros convert-bag: error: cannot read bag {truncated}")


def test_record_topics_default_to_what_convert_needs() -> None:
    assert topics_to_record(None) == list(DEFAULT_RECORD_TOPICS)
    assert {"/camera/image_raw", TARGETS_TOPIC, "/glus/segmentation"} <= set(DEFAULT_RECORD_TOPICS)
    assert topics_to_record(["/a"]) == ["/a", TARGETS_TOPIC]
    assert topics_to_record(["/a"], with_targets=False) == ["/a"]
    assert TARGETS_TOPIC not in topics_to_record(None, with_targets=False)
