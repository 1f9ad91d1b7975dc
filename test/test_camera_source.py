"""The camera_source node in a child process: what it publishes, how fast, to which QoS, and its start-up errors."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import generate_video
from glus_ros.ros.camera_source import SyntheticCamera, open_source, scale_intrinsics

from helpers_ros import RosTestEnv, rclpy_context, ros_session, spin_until

WAIT_S = 20.0
LIFETIME_S = "60"


@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def _ros_args(**params: object) -> list[str]:
    args = ["--ros-args"]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    return args


def _topics(tag: str) -> dict[str, str]:
    base = f"/glus_test_{os.getpid()}_{tag}"
    return {"image_topic": f"{base}/image", "depth_topic": f"{base}/depth", "info_topic": f"{base}/info"}


def _stamp(msg: object) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_synthetic_camera_streams_consistent_rgbd(ros_test_env: RosTestEnv) -> None:
    """640x480 rgb8 + 16UC1 depth + CameraInfo with one stamp per frame, at >= 10 Hz, to reliable and best-effort
    subscribers; the depth and intrinsics are the synthetic scene's, upscaled."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    topics = _topics("synth")
    args = _ros_args(**topics, rate_hz=30.0, synth_seed=3, synth_frames=16, frame_id="test_cam")
    images: list[tuple[float, Image]] = []
    best_effort: list[Image] = []
    infos: list[CameraInfo] = []
    depths: list[Image] = []
    with rclpy_context() as context, ros_test_env.child("run_camera_source.py", LIFETIME_S, *args) as child:
        node = rclpy.create_node("glus_test_camera_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, topics["image_topic"], lambda m: images.append((time.monotonic(), m)), reliable)
        node.create_subscription(CameraInfo, topics["info_topic"], infos.append, reliable)
        node.create_subscription(Image, topics["depth_topic"], depths.append, reliable)
        node.create_subscription(
            Image,
            topics["image_topic"],
            best_effort.append,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
        )
        assert spin_until(executor, lambda: bool(images), WAIT_S, child), child.describe()
        first = len(images)
        t0 = time.monotonic()
        spin_until(executor, lambda: time.monotonic() - t0 > 2.0, 3.0, child)
        window = [t for t, _ in images[first:] if t - t0 <= 2.0]
        spin_until(executor, lambda: len(infos) >= len(images) and len(depths) >= len(images), 2.0, child)
        assert child.alive(), child.describe()
        assert "synthetic scene expressions:" in child.stderr_text()

    rate = len(window) / 2.0
    assert rate >= 10.0, f"only {rate:.1f} Hz received"
    assert best_effort, "a best-effort subscriber must also receive the reliable publisher's images"
    msg = images[-1][1]
    assert (msg.width, msg.height, msg.encoding, msg.step, msg.header.frame_id) == (640, 480, "rgb8", 1920, "test_cam")
    # one header per frame: every image stamp has its camera info and depth
    info_by_stamp = {_stamp(m): m for m in infos}
    depth_by_stamp = {_stamp(m): m for m in depths}
    checked = [m for _, m in images[:-5]]  # (reliable, but a loaded machine may still overwrite a queued sample)
    complete = [m for m in checked if _stamp(m) in info_by_stamp and _stamp(m) in depth_by_stamp]
    assert len(complete) >= 0.8 * len(checked), f"{len(complete)} of {len(checked)} images have info and depth"
    assert len({_stamp(m) for _, m in images}) == len(images), "stamps must be unique per frame"

    # the same scene drawn here, independently upscaled: the depth is one of its frames', the image matches it
    video = generate_video(3, 0, SynthConfig(frames=16))
    scene_mm = [
        np.round(cv2.resize(d, (640, 480), interpolation=cv2.INTER_NEAREST) * 1000).astype(np.uint16)
        for d in video.depth
    ]
    # the newest image whose depth and info arrived (the last few may still be in flight at shutdown)
    msg = next(m for _, m in reversed(images) if _stamp(m) in depth_by_stamp and _stamp(m) in info_by_stamp)
    depth_msg = depth_by_stamp[_stamp(msg)]
    assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ("16UC1", 640, 480)
    depth_mm = np.frombuffer(depth_msg.data, np.uint16).reshape(480, 640)
    matches = [t for t, mm in enumerate(scene_mm) if np.array_equal(mm, depth_mm)]
    assert matches, "the depth image is not a frame of the synthetic scene"
    rgb = np.frombuffer(msg.data, np.uint8).reshape(480, 640, 3)
    errors = [np.abs(cv2.resize(video.frames[t], (640, 480)).astype(int) - rgb).mean() for t in matches]
    assert min(errors) < 2.0, "image and depth of one stamp come from different frames"
    k = info_by_stamp[_stamp(msg)].k
    height, width = video.size
    assert k[0] == pytest.approx(video.intrinsics.fx * 640 / width)
    assert k[4] == pytest.approx(video.intrinsics.fy * 480 / height)
    assert k[2] == pytest.approx((video.intrinsics.cx + 0.5) * 640 / width - 0.5)


def test_frame_folder_source_loops_in_name_order_or_plays_once(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """PNG frames arrive pixel-exact in name order, looping; without looping the node exits 0 after the last."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    topics = _topics("folder")
    received: list[Image] = []
    args = _ros_args(**topics, source=str(tmp_path), rate_hz=20.0, queue_depth=50)
    with rclpy_context() as context, ros_test_env.child("run_camera_source.py", LIFETIME_S, *args) as child:
        node = rclpy.create_node("glus_test_folder_listener", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, topics["image_topic"], received.append, qos)
        assert spin_until(executor, lambda: len(received) >= 7, WAIT_S, child), child.describe()
    got = [np.frombuffer(m.data, np.uint8).reshape(24, 32, 3) for m in received]
    order = [next(i for i, f in enumerate(frames) if np.array_equal(g, f)) for g in got]
    assert all(b == (a + 1) % 3 for a, b in itertools.pairwise(order)), order

    once = _ros_args(**_topics("once"), source=str(tmp_path), loop=False, rate_hz=20.0)
    with ros_test_env.child("run_camera_source.py", LIFETIME_S, *once) as child:
        assert child.proc is not None
        child.proc.wait(WAIT_S)
        assert child.proc.returncode == 0, child.describe()
        assert "end of source after 3 frames" in child.stderr_text()


@pytest.mark.parametrize(
    ("source", "message"),
    [("/nonexistent/video.mp4", "no such file or folder"), ("EMPTY_DIR", "no image frames")],
)
def test_bad_source_exits_2_with_a_message(ros_test_env: RosTestEnv, tmp_path: Path, source: str, message: str) -> None:
    if source == "EMPTY_DIR":
        source = str(tmp_path)
    with ros_test_env.child("run_camera_source.py", LIFETIME_S, *_ros_args(source=source)) as child:
        assert child.proc is not None
        child.proc.wait(WAIT_S)
        assert child.proc.returncode == 2, child.describe()
        stderr = child.stderr_text()
    assert "camera_source: error:" in stderr and message in stderr and "Traceback" not in stderr


def test_cli_reports_bad_parameters(ros_test_env: RosTestEnv) -> None:
    """glus-ros camera: a bad option value is one error line and exit 2, before anything is published."""
    import sys

    env = ros_test_env.child_env()
    result = subprocess.run(
        [sys.executable, "-m", "glus_ros.cli", "camera", "--rate", "-3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "glus-ros camera: error: rate_hz must be in (0, 1000]" in result.stderr
    assert "Traceback" not in result.stderr


def test_sources_without_ros(tmp_path: Path) -> None:
    """ROS-free part: intrinsics scaling, synthetic ground truth at the published size, video looping, errors."""
    assert scale_intrinsics((100.0, 100.0, 49.5, 24.5), (50, 100), (100, 200)) == (200.0, 200.0, 99.5, 49.5)
    cam = SyntheticCamera(seed=1, frames=8, width=64, height=48)
    frame = cam.read_next()
    assert frame is not None and frame.rgb.shape == (48, 64, 3) and frame.depth.shape == (48, 64)
    assert cam.expressions and cam.expression_mask(0, 0).shape == (48, 64)
    assert [cam.next_frame(loop=False) is None for _ in range(8)][-1], "8 frames, then the end"
    assert cam.next_frame(loop=True).index == 0
    # a 5-frame video loops back to its first frame
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(5):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    video = open_source(str(path), fov_deg=90.0)
    seen = [video.next_frame(loop=True) for _ in range(7)]
    assert [f.index for f in seen] == [0, 1, 2, 3, 4, 0, 1]
    assert seen[0].intrinsics[0] == pytest.approx(16.0)  # fx = (W/2) / tan(45 deg)
    assert abs(int(seen[2].rgb.mean()) - 80) <= 3
    video.close()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a video file"):
        open_source(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="fov_deg"):
        open_source(str(path), fov_deg=200.0)
    with pytest.raises(ValueError, match="at least 32x32"):
        SyntheticCamera(width=8, height=8)
