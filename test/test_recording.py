"""Bags: ``glus-ros record`` in a child process (SIGTERM and SIGKILL), and bag -> MeViS-layout conversion."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glus_ros.cli import main as cli_main
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.recording.bag_to_dataset import BagReadError, cdr_bytes, convert_bag
from glus_ros.recording.typestore import glus_typestore

from helpers_ros import RosTestEnv, rclpy_context, ros_session, spin_until

WAIT_S = 20.0
LIFETIME_S = "90"
N = 20


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


# ---------------------------------------------------------------------------------------------------------------
# recording across processes


def _result_array(i: int) -> Any:
    from glus_ros_msgs.msg import TargetResult, TargetResultArray

    result = TargetResult(target_id=f"t{i}", expression=f"the object number {i}", score=0.5, state=TargetResult.LOST)
    result.mask.height, result.mask.width, result.mask.encoding, result.mask.step = 2, 3, "mono8", 3
    result.mask.data = bytes([i % 256, 0, 255, 1, 2, 3])
    msg = TargetResultArray(results=[result], latency_ms=float(i), frames_dropped=i)
    msg.header.stamp.sec, msg.header.frame_id = 1000 + i, "cam"
    return msg


def _image(i: int) -> Any:
    from sensor_msgs.msg import Image

    msg = Image(height=4, width=5, encoding="rgb8", step=15, data=bytes((i + k) % 256 for k in range(60)))
    msg.header.stamp.sec = 2000 + i
    return msg


def _same_messages(recorded: list[bytes], published: list[Any]) -> bool:
    """The recorded CDR decodes to the published messages (raw bytes differ only in DDS padding)."""
    from rclpy.serialization import deserialize_message

    return len(recorded) == len(published) and all(
        deserialize_message(raw, type(msg)) == msg for raw, msg in zip(recorded, published, strict=True)
    )


def _read_bag(path: Path) -> dict[str, list[bytes]]:
    from rosbags.rosbag2 import Reader

    out: dict[str, list[bytes]] = {}
    with Reader(path) as reader:
        for connection, _t, raw in reader.messages():
            out.setdefault(connection.topic, []).append(bytes(cdr_bytes(raw)))  # zstd without metadata.yaml
    return out


def _record_and_publish(
    ros_test_env: RosTestEnv, bag: Path, storage: str, stop: Callable[[Any], None]
) -> tuple[dict[str, list[Any]], Any]:
    """Start the recorder, publish N messages on three topics once it subscribed, then ``stop(child)``.

    Returns the messages published per topic, and the finished child.
    """
    import rclpy
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    base = f"/glus_test_rec_{os.getpid()}_{storage}_{time.monotonic_ns() % 100000}"
    topics = {"text": f"{base}/text", "results": f"{base}/results", "image": f"{base}/image"}
    published: dict[str, list[Any]] = {t: [] for t in topics.values()}
    args = ["--topics", *topics.values(), f"{base}/never", "--out", str(bag), "--storage", storage]
    with rclpy_context() as context, ros_test_env.child("run_recorder.py", LIFETIME_S, *args) as child:
        node = rclpy.create_node("glus_test_rec_publisher", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        reliable = QoSProfile(depth=N, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {
            topics["text"]: (node.create_publisher(String, topics["text"], reliable), lambda i: String(data=f"m{i}")),
            topics["results"]: (node.create_publisher(TargetResultArray, topics["results"], reliable), _result_array),
            topics["image"]: (
                node.create_publisher(
                    Image, topics["image"], QoSProfile(depth=N, reliability=ReliabilityPolicy.BEST_EFFORT)
                ),
                _image,
            ),
        }
        subscribed = lambda: all(p.get_subscription_count() >= 1 for p, _ in pubs.values())  # noqa: E731
        assert spin_until(executor, subscribed, WAIT_S, child), child.describe()
        for i in range(N):
            for topic, (pub, make) in pubs.items():
                msg = make(i)
                pub.publish(msg)
                published[topic].append(msg)
            executor.spin_once(timeout_sec=0.005)
        for topic in (topics["text"], topics["results"]):
            assert pubs[topic][0].wait_for_all_acked(rclpy.duration.Duration(seconds=5.0)), child.describe()
        stop(child)
    return published, child


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_then_sigterm_keeps_every_message(ros_test_env: RosTestEnv, tmp_path: Path, storage: str) -> None:
    """Reliable topics: all N messages; best effort: what arrived, in order; the bag is closed and typed."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import Image

    bag = tmp_path / "bag"

    def sigterm(child: Any) -> None:
        child.proc.send_signal(signal.SIGTERM)
        child.proc.wait(WAIT_S)

    published, child = _record_and_publish(ros_test_env, bag, storage, sigterm)
    assert child.proc.returncode == 0, child.describe()
    assert (bag / "metadata.yaml").is_file(), "a clean stop writes the metadata"
    recorded = _read_bag(bag)
    text, results, image = published
    assert _same_messages(recorded[text], published[text])
    assert _same_messages(recorded[results], published[results])
    got_images = recorded.get(image, [])
    assert 1 <= len(got_images) <= N
    first = published[image].index(deserialize_message(got_images[0], Image))
    assert _same_messages(got_images, published[image][first : first + len(got_images)]), "best effort: in order"
    assert all(not topic.endswith("/never") for topic in recorded)
    # the bag carries glus_ros_msgs' definition, with the hash ROS computed for it
    ros_hash = json.loads((Path(sys.prefix) / "share/glus_ros_msgs/msg/TargetResultArray.json").read_text())
    with AnyReader([bag]) as reader:
        connection = next(c for c in reader.connections if c.topic == results)
        assert connection.msgtype == "glus_ros_msgs/msg/TargetResultArray"
        assert connection.digest == ros_hash["type_hashes"][0]["hash_string"]
        decoded = [reader.deserialize(raw, connection.msgtype) for _, _, raw in reader.messages([connection])]
    assert [m.results[0].expression for m in decoded] == [f"the object number {i}" for i in range(N)]
    assert decoded[3].frames_dropped == 3 and list(decoded[3].results[0].mask.data) == [3, 0, 255, 1, 2, 3]


def test_sqlite3_bag_survives_sigkill(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """Every message written before a SIGKILL is in the .db3 (committed per message); only metadata.yaml is lost."""
    bag = tmp_path / "bag"
    counts: list[int] = []

    def sigkill_once_written(child: Any) -> None:
        db = bag / "bag.db3"

        def written() -> int:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

        deadline = time.monotonic() + WAIT_S
        while written() < 2 * N and time.monotonic() < deadline:  # the reliable topics at least
            time.sleep(0.05)
        counts.append(written())
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait(WAIT_S)

    published, child = _record_and_publish(ros_test_env, bag, "sqlite3", sigkill_once_written)
    assert child.proc.returncode == -signal.SIGKILL
    assert not (bag / "metadata.yaml").exists()
    recorded = _read_bag(bag / "bag.db3")
    assert sum(len(v) for v in recorded.values()) == counts[0] >= 2 * N
    text, results, _image = published
    assert _same_messages(recorded[text], published[text])
    assert _same_messages(recorded[results], published[results])


def test_mcap_bag_killed_is_a_clear_error(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """An mcap bag whose recorder was SIGKILLed has no index: reading it is an error naming the file, with a hint."""
    bag = tmp_path / "bag"

    def sigkill(child: Any) -> None:
        time.sleep(0.3)
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait(WAIT_S)

    _record_and_publish(ros_test_env, bag, "mcap", sigkill)
    with pytest.raises(BagReadError, match=r"bag\.mcap.*mcap bag whose recorder was killed"):
        convert_bag(bag, tmp_path / "out", image_topic="/x", expression="anything")
    assert not (tmp_path / "out" / "train").exists()


def test_record_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "bag"
    existing.mkdir()
    assert cli_main(["record", "--topics", "/a", "--out", str(existing)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert cli_main(["record", "--topics", "/bad topic", "--out", str(tmp_path / "new")]) == 2
    assert "invalid topic name '/bad topic'" in capsys.readouterr().err
    assert cli_main(["record", "--topics", "/a", "--out", str(tmp_path / "new"), "--duration", "0"]) == 2
    assert "duration must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------------------------
# bag -> dataset

H, W = 24, 32
SEC = 1_000_000_000


def _frame(i: int) -> np.ndarray:
    """A smooth, distinct frame per index (JPEG keeps it close)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([(x * 6 + i * 20) % 256, (y * 8 + i * 5) % 256, np.full((H, W), 30 * (i % 8))], 2).astype(np.uint8)


def _mask(i: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[2 + i % 5 : 10 + i % 5, 3 + i : 12 + i] = True
    return mask


class BagBuilder:
    """Writes a bag with rosbags directly: rclpy messages serialised, at chosen bag times."""

    def __init__(self, path: Path, storage: str = "sqlite3") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.typestore = glus_typestore()
        self.writer = Writer(path, version=8, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, Any] = {}

    def add(self, topic: str, msgtype: str, t_ns: int, msg: Any) -> None:
        from rclpy.serialization import serialize_message

        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.writer.write(self.connections[topic], t_ns, serialize_message(msg))

    def image(self, topic: str, t_ns: int, stamp_ns: int, rgb: np.ndarray) -> None:
        from sensor_msgs.msg import Image

        msg = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=rgb.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, SEC)
        self.add(topic, "sensor_msgs/msg/Image", t_ns, msg)

    def mask(self, topic: str, t_ns: int, stamp_ns: int, mask: np.ndarray) -> None:
        from sensor_msgs.msg import Image

        msg = Image(height=H, width=W, encoding="mono8", step=W, data=(mask * 255).astype(np.uint8).tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, SEC)
        self.add(topic, "sensor_msgs/msg/Image", t_ns, msg)

    def close(self) -> None:
        self.writer.close()


def test_convert_string_commands_and_mask_images(tmp_path: Path) -> None:
    """Two expressions -> two videos; masks matched by stamp (exact or within tolerance); unlabelled frames left out;
    MevisDataset reads back the frames, expressions and masks."""
    from std_msgs.msg import String

    bag = tmp_path / "bag"
    builder = BagBuilder(bag)
    t0 = 50 * SEC
    period = SEC // 10
    builder.add("/glus/command", "std_msgs/msg/String", t0 + period // 2, String(data="the red ball"))
    builder.add("/glus/command", "std_msgs/msg/String", t0 + 6 * period + period // 2, String(data="the blue box"))
    builder.add("/glus/command", "std_msgs/msg/String", t0 + 10 * period + period // 2, String(data=""))
    for i in range(12):
        stamp = 7 * SEC + i * period  # camera clock, unrelated to bag time
        builder.image("/camera/image_raw", t0 + i * period + 1000, stamp, _frame(i))
        if i == 4:
            continue  # no label: frame 4 is left out
        jitter = 3_000_000 if i == 8 else 0  # 3 ms off: still this image's label
        builder.mask("/glus/mask", t0 + i * period + 5000, stamp + jitter, _mask(i))
    builder.close()

    summary = convert_bag(bag, tmp_path / "data", label_topic="/glus/mask")
    assert (summary.videos, summary.frames, summary.expressions) == (2, 9, 2)
    assert (summary.images_read, summary.skipped_no_target, summary.skipped_unlabeled) == (12, 2, 1)
    dataset = MevisDataset(tmp_path / "data", "train")
    assert dataset.videos() == ["bag_0000", "bag_0001"]
    expected = {"bag_0000": [1, 2, 3, 5, 6], "bag_0001": [7, 8, 9, 10]}
    by_video = {e.video: e for e in dataset.expressions()}
    assert by_video["bag_0000"].text == "the red ball" and by_video["bag_0001"].text == "the blue box"
    for video, indices in expected.items():
        assert dataset.frames(video) == [f"{k:05d}" for k in range(len(indices))]
        masks = dataset.gt_masks(by_video[video])
        for k, i in enumerate(indices):
            np.testing.assert_array_equal(masks[k], _mask(i))
            frame = dataset.load_frame(video, dataset.frames(video)[k]).astype(int)
            errors = [np.abs(frame - _frame(j)).mean() for j in range(12)]  # JPEG: close to its own frame only
            assert errors[i] < 8.0 and int(np.argmin(errors)) == i
    provenance = json.loads((tmp_path / "data/train/bag_source.json").read_text())
    assert provenance["videos"]["bag_0001"]["stamps_ns"][0] == 7 * SEC + 7 * (SEC // 10)

    # the converted recording trains like any MeViS-layout set (fine-tuning on the robot's own bags)
    from glus_ros.training.config import config_from_dict
    from glus_ros.training.trainer import Trainer

    cfg = config_from_dict({"name": "bag", "model": "tiny", "samples_per_epoch": 2,
                            "datasets": [{"kind": "mevis", "root": str(tmp_path / "data")}],
                            "optim": {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "warmup_steps": 0}})
    result = Trainer(cfg, output_dir=tmp_path / "run", progress=False).train()
    assert result.model_dir is not None and np.isfinite(result.history[0]["total"])


def test_convert_referring_commands_with_tracker_pseudo_labels(tmp_path: Path) -> None:
    """ReferringCommandArray with two targets, TargetResultArray labels matched by target_id (LOST = no mask),
    CompressedImage input, --every-n 2."""
    import cv2
    from glus_ros_msgs.msg import ReferringCommand, ReferringCommandArray, TargetResult, TargetResultArray
    from sensor_msgs.msg import CompressedImage

    from glus_ros.ros.image_conversion import mask_to_image

    bag = tmp_path / "bag"
    builder = BagBuilder(bag, storage="mcap")
    period = SEC // 10
    commands = ReferringCommandArray(
        commands=[
            ReferringCommand(action=ReferringCommand.CLEAR),
            ReferringCommand(action=ReferringCommand.ADD, target_id="cup", expression="the cup"),
            ReferringCommand(action=ReferringCommand.ADD, target_id="hand", expression="the left hand"),
        ]
    )
    builder.add("/glus/commands", "glus_ros_msgs/msg/ReferringCommandArray", 1, commands)
    for i in range(8):
        stamp = 3 * SEC + i * period
        _ok, jpeg = cv2.imencode(".png", cv2.cvtColor(_frame(i), cv2.COLOR_RGB2BGR))
        msg = CompressedImage(format="png", data=jpeg.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, SEC)
        builder.add("/camera/image/compressed", "sensor_msgs/msg/CompressedImage", 10 + i * period, msg)
        results = TargetResultArray()
        results.header = msg.header
        for target_id, mask in (("cup", _mask(i)), ("hand", _mask(i + 3))):
            lost = target_id == "hand" and i == 2
            result = TargetResult(target_id=target_id, state=TargetResult.LOST if lost else TargetResult.TRACKING)
            result.header = msg.header
            result.mask = mask_to_image(np.zeros_like(mask) if lost else mask, msg.header)
            results.results.append(result)
        builder.add("/glus/segmentation", "glus_ros_msgs/msg/TargetResultArray", 20 + i * period, results)
    builder.close()

    summary = convert_bag(
        bag,
        tmp_path / "data",
        image_topic="/camera/image/compressed",
        command_topic="/glus/commands",
        label_topic="/glus/segmentation",
        every_n=2,
        split="robot",
    )
    assert (summary.videos, summary.frames, summary.expressions, summary.skipped_every_n) == (1, 4, 2, 4)
    dataset = MevisDataset(tmp_path / "data", "robot")
    (video,) = dataset.videos()
    cup, hand = sorted(dataset.expressions(), key=lambda e: e.exp_id)
    assert (cup.text, hand.text) == ("the cup", "the left hand")
    kept = [0, 2, 4, 6]
    cup_masks, hand_masks = dataset.gt_masks(cup), dataset.gt_masks(hand)
    for k, i in enumerate(kept):
        np.testing.assert_array_equal(cup_masks[k], _mask(i))
        np.testing.assert_array_equal(hand_masks[k], np.zeros((H, W), bool) if i == 2 else _mask(i + 3))
        np.testing.assert_array_equal(dataset.load_frame(video, f"{k:05d}").shape, (H, W, 3))
    raw = json.loads((tmp_path / "data/robot/mask_dict.json").read_text())
    assert raw[hand.anno_ids[0]][1] is None, "a LOST target is 'absent' (null) in that frame"


def test_convert_merges_the_trackers_two_command_topics(tmp_path: Path) -> None:
    """String on /glus/command sets target_0 beside the ReferringCommandArray targets; no label topic: no masks;
    an undecodable image is skipped, not fatal."""
    from glus_ros_msgs.msg import ReferringCommand, ReferringCommandArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    bag = tmp_path / "bag"
    builder = BagBuilder(bag)
    builder.add("/glus/command", "std_msgs/msg/String", 5, String(data="the mug"))
    add_hand = ReferringCommand(action=ReferringCommand.ADD, target_id="hand", expression="the hand")
    builder.add(
        "/glus/commands", "glus_ros_msgs/msg/ReferringCommandArray", 25, ReferringCommandArray(commands=[add_hand])
    )
    builder.add("/glus/command", "std_msgs/msg/String", 45, String(data="the red mug"))
    for i, t in enumerate((10, 20, 30, 40, 50)):
        builder.image("/camera/image_raw", t, t, _frame(i))
    broken = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))  # skipped, counted
    builder.add("/camera/image_raw", "sensor_msgs/msg/Image", 35, broken)
    builder.close()
    summary = convert_bag(bag, tmp_path / "data")
    assert (summary.videos, summary.frames, summary.commands, summary.skipped_undecodable) == (3, 5, 3, 1)
    dataset = MevisDataset(tmp_path / "data", "train")
    assert not dataset.has_ground_truth()
    texts = {v: sorted(e.text for e in dataset.expressions() if e.video == v) for v in dataset.videos()}
    assert texts == {
        "bag_0000": ["the mug"],
        "bag_0001": ["the hand", "the mug"],
        "bag_0002": ["the hand", "the red mug"],
    }
    assert [len(dataset.frames(v)) for v in dataset.videos()] == [2, 2, 1]


def test_convert_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from std_msgs.msg import String

    bag = tmp_path / "bag"
    builder = BagBuilder(bag)
    builder.add("/glus/command", "std_msgs/msg/String", 5, String(data="the cup"))
    builder.image("/camera/image_raw", 10, 10, _frame(0))
    builder.image("/colour_masks", 10, 10, _frame(0))
    builder.close()
    with pytest.raises(ValueError, match=r"label on /colour_masks at bag time 0.000 s: unsupported image encoding"):
        convert_bag(bag, tmp_path / "a", label_topic="/colour_masks")
    with pytest.raises(ValueError, match=r"label topic /glus/mask is not in bag .*/camera/image_raw \(sensor_msgs"):
        convert_bag(bag, tmp_path / "a", label_topic="/glus/mask")
    with pytest.raises(ValueError, match="command topic /camera/image_raw has type sensor_msgs/msg/Image"):
        convert_bag(bag, tmp_path / "a", command_topic="/camera/image_raw")
    assert not (tmp_path / "a" / "train").exists()
    assert convert_bag(bag, tmp_path / "ok").frames == 1
    with pytest.raises(ValueError, match="is not empty"):
        convert_bag(bag, tmp_path / "ok")

    # corrupt bags: garbage storage file, truncated storage file, garbage metadata -> errors naming the bag
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "garbage.db3").write_bytes(b"this is not sqlite" * 100)
    truncated = tmp_path / "truncated"
    builder = BagBuilder(truncated, storage="mcap")
    for i in range(5):
        builder.image("/camera/image_raw", 10 + i, 10 + i, _frame(i))
    builder.close()
    data = (truncated / "truncated.mcap").read_bytes()
    (truncated / "truncated.mcap").write_bytes(data[: len(data) // 2])
    bad_meta = tmp_path / "bad_meta"
    bad_meta.mkdir()
    (bad_meta / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed")
    for broken in (garbage, truncated, bad_meta):
        with pytest.raises(BagReadError, match=f"cannot read bag {broken}"):
            convert_bag(broken, tmp_path / "never", expression="the cup")
        assert cli_main(["convert-bag", str(broken), "--out", str(tmp_path / "never"), "--expression", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"glus-ros convert-bag: error: cannot read bag {broken}") and "Traceback" not in err
    assert not (tmp_path / "never" / "train").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_bag(tmp_path / "missing", tmp_path / "never", expression="x")
