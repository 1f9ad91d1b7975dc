"""A camera without a camera: publishes a synthetic RGB-D scene, a video file or a frame folder as ROS images.

Why: the tracker node, demos, recordings and tests need a live ``sensor_msgs/Image`` stream with matching
``CameraInfo`` (and depth for 3D points) on machines without a camera. The synthetic source also knows
its scene (expressions and ground-truth masks), so a demo can pick an expression that has an answer.

The frame sources at the top use no ROS (the demo and tests use them directly); :class:`CameraSourceNode`
only stamps and publishes what they give. Every frame's image, depth and camera info carry the same
header, as a real RGB-D driver's do.
"""

from __future__ import annotations

import logging
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidTopicNameException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from glus_ros.data.config import SynthConfig
from glus_ros.data.render import intrinsics_for
from glus_ros.data.synth import SyntheticVideo, generate_video
from glus_ros.ros.image_conversion import camera_info, depth_to_image, rgb_to_image
from glus_ros.ros_env import apply_ros_environment
from glus_ros.video_io import VIDEO_SUFFIXES, list_frame_files, read_image

log = logging.getLogger(__name__)

Intrinsics4 = tuple[float, float, float, float]  # fx, fy, cx, cy in pixels
NODE_NAME = "camera_source"
RELIABILITIES = ("reliable", "best_effort")


@dataclass
class CameraFrame:
    """One frame of a source: RGB, optional depth in metres (same size), intrinsics, index in the source."""

    rgb: np.ndarray
    depth: np.ndarray | None
    intrinsics: Intrinsics4
    index: int


class FrameSource(ABC):
    """A finite sequence of frames that can be rewound; :meth:`next_frame` loops it if asked."""

    description: str = ""

    @abstractmethod
    def read_next(self) -> CameraFrame | None:
        """The next frame, or None at the end of the source."""

    @abstractmethod
    def rewind(self) -> None:
        """Start again from the first frame."""

    def next_frame(self, loop: bool) -> CameraFrame | None:
        frame = self.read_next()
        if frame is None and loop:
            self.rewind()
            frame = self.read_next()
        return frame

    def close(self) -> None:  # noqa: B027  (optional hook: most sources hold nothing to release)
        """Release files or devices (nothing by default)."""


def scale_intrinsics(intrinsics: Intrinsics4, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Intrinsics4:
    """Intrinsics of an image resized from ``src_size`` to ``dst_size`` (both (H, W)), pixel centres kept aligned."""
    fx, fy, cx, cy = intrinsics
    sy = dst_size[0] / src_size[0]
    sx = dst_size[1] / src_size[1]
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


class SyntheticCamera(FrameSource):
    """A synthetic RGB-D scene (glus_ros.data.synth) upscaled to a camera-like size.

    The generator draws 96-160 px frames; frames are resized bilinearly, depth and masks by nearest
    neighbour, and intrinsics are scaled with them so that 3D points stay consistent.
    """

    def __init__(self, seed: int = 0, index: int = 0, frames: int = 64, width: int = 640, height: int = 480) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"synthetic camera size must be at least 32x32, got {width}x{height}")
        self.video: SyntheticVideo = generate_video(seed, index, SynthConfig(frames=frames))
        self.size = (height, width)
        native = self.video.intrinsics
        self.intrinsics = scale_intrinsics((native.fx, native.fy, native.cx, native.cy), self.video.size, self.size)
        self.description = (
            f"synthetic scene {self.video.name} (seed {seed}, {frames} frames, "
            f"{self.video.size[1]}x{self.video.size[0]} drawn, published at {width}x{height})"
        )
        self._next = 0

    def __len__(self) -> int:
        return len(self.video.frames)

    @property
    def expressions(self) -> list[str]:
        return [e.text for e in self.video.expressions]

    def _resize(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.resize(image, (self.size[1], self.size[0]), interpolation=interpolation)

    def frame(self, t: int) -> CameraFrame:
        """Frame ``t`` at the published size."""
        rgb = self._resize(self.video.frames[t], cv2.INTER_LINEAR)
        depth = self._resize(self.video.depth[t].astype(np.float32), cv2.INTER_NEAREST)
        return CameraFrame(rgb=rgb, depth=depth, intrinsics=self.intrinsics, index=t)

    def expression_mask(self, expression: int, t: int) -> np.ndarray:
        """Ground truth of expression number ``expression`` in frame ``t``: the union of its objects, published size."""
        mask = np.zeros(self.video.size, dtype=np.uint8)
        for obj_id in self.video.expressions[expression].obj_ids:
            mask |= self.video.object_masks[obj_id][t].astype(np.uint8)
        return self._resize(mask, cv2.INTER_NEAREST).astype(bool)

    def read_next(self) -> CameraFrame | None:
        if self._next >= len(self):
            return None
        frame = self.frame(self._next)
        self._next += 1
        return frame

    def rewind(self) -> None:
        self._next = 0


def _fov_intrinsics(width: int, height: int, fov_deg: float) -> Intrinsics4:
    k = intrinsics_for(width, height, fov_deg)
    return k.fx, k.fy, k.cx, k.cy


class VideoFileCamera(FrameSource):
    """A video file decoded frame by frame (never all in memory); intrinsics from a horizontal field of view."""

    def __init__(self, path: Path, fov_deg: float) -> None:
        self.path = path
        self.fov_deg = fov_deg
        self._cap = self._open()
        first = self.read_next()
        if first is None:
            self._cap.release()
            raise ValueError(f"camera source {path}: no frame could be decoded from this video")
        self.size = first.rgb.shape[:2]
        self.description = f"video {path} ({self.size[1]}x{self.size[0]})"
        self.rewind()

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ValueError(f"camera source {self.path}: cannot open this video (unsupported codec or not a video)")
        self._index = 0
        return cap

    def read_next(self) -> CameraFrame | None:
        ok, bgr = self._cap.read()
        if not ok:
            return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frame = CameraFrame(rgb, None, _fov_intrinsics(rgb.shape[1], rgb.shape[0], self.fov_deg), self._index)
        self._index += 1
        return frame

    def rewind(self) -> None:
        self._cap.release()  # reopening is reliable for every container; seeking is not
        self._cap = self._open()

    def close(self) -> None:
        self._cap.release()


class FrameFolderCamera(FrameSource):
    """A folder of image files in name order, read lazily; unreadable files are skipped with a warning."""

    def __init__(self, folder: Path, fov_deg: float) -> None:
        self.files = list_frame_files(folder)
        self.fov_deg = fov_deg
        first = read_image(self.files[0])  # a clear error now, not at the first timer tick
        self.size = first.shape[:2]
        self.description = f"frame folder {folder} ({len(self.files)} frames, {self.size[1]}x{self.size[0]})"
        self._next = 0

    def read_next(self) -> CameraFrame | None:
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                rgb = read_image(path)
            except ValueError as exc:
                log.warning("skipping frame: %s", exc)
                continue
            return CameraFrame(rgb, None, _fov_intrinsics(rgb.shape[1], rgb.shape[0], self.fov_deg), self._next - 1)
        return None

    def rewind(self) -> None:
        self._next = 0


def open_source(
    source: str,
    fov_deg: float = 60.0,
    synth_seed: int = 0,
    synth_index: int = 0,
    synth_frames: int = 64,
    synth_width: int = 640,
    synth_height: int = 480,
) -> FrameSource:
    """The frame source named by ``source``: "synth", a video file or a folder of frames (ValueError if unusable)."""
    if source == "synth":
        return SyntheticCamera(synth_seed, synth_index, synth_frames, synth_width, synth_height)
    if not 10.0 <= fov_deg <= 170.0:
        raise ValueError(f"fov_deg must be in [10, 170] degrees, got {fov_deg}")
    path = Path(source).expanduser()
    if not source or not path.exists():
        raise ValueError(f"camera source {source!r} is not 'synth' and no such file or folder exists")
    if path.is_dir():
        return FrameFolderCamera(path, fov_deg)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"camera source {path}: not a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder")
    return VideoFileCamera(path, fov_deg)


# ---------------------------------------------------------------------------------------------------------------
# ROS layer


# name -> (default, description); read-only: the node is restarted to change its source
PARAMETERS: dict[str, tuple[Any, str]] = {
    "source": ("synth", "'synth', a video file or a folder of frames"),
    "rate_hz": (30.0, "publishing rate [Hz] (the source's own frame rate is ignored)"),
    "loop": (True, "start again at the end of the source; else the node stops after the last frame"),
    "frame_id": ("camera_color_optical_frame", "header.frame_id of every message"),
    "image_topic": ("/camera/image_raw", "sensor_msgs/Image rgb8"),
    "depth_topic": ("/camera/depth/image_raw", "sensor_msgs/Image 16UC1 millimetres (synthetic source only)"),
    "info_topic": ("/camera/camera_info", "sensor_msgs/CameraInfo, same stamp as the image"),
    "publish_depth": (True, "publish depth (only the synthetic source has depth)"),
    "synth_seed": (0, "synthetic scene: random seed (>= 0)"),
    "synth_index": (0, "synthetic scene: video index in the seed's stream (>= 0)"),
    "synth_frames": (64, "synthetic scene: frames before it loops (>= 8)"),
    "synth_width": (640, "synthetic scene: published width [px]; drawn at ~100-160 px and upscaled"),
    "synth_height": (480, "synthetic scene: published height [px]"),
    "fov_deg": (60.0, "video/folder sources: horizontal field of view [deg] for CameraInfo (no calibration known)"),
    "reliability": ("reliable", "QoS reliability of all publishers: 'reliable' or 'best_effort'"),
    "queue_depth": (5, "QoS history depth of the publishers"),
}


class CameraSourceNode(Node):
    """Publishes frames of a :class:`FrameSource` at a fixed wall-clock rate; invalid parameters raise ValueError."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
        try:
            self._setup()
        except BaseException:
            self.destroy_node()
            raise

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _setup(self) -> None:
        for name, (default, description) in PARAMETERS.items():
            try:
                self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
            except ParameterException as exc:  # e.g. rate_hz:=30 (an integer) for a double parameter
                raise ValueError(f"parameter {name} (default {default!r}): {exc}") from None
        rate = float(self._param("rate_hz"))
        if not (math.isfinite(rate) and 0.0 < rate <= 1000.0):
            raise ValueError(f"rate_hz must be in (0, 1000], got {rate}")
        reliability = str(self._param("reliability"))
        if reliability not in RELIABILITIES:
            raise ValueError(f"reliability must be one of {', '.join(RELIABILITIES)}, got {reliability!r}")
        depth = int(self._param("queue_depth"))
        if depth < 1:
            raise ValueError(f"queue_depth must be >= 1, got {depth}")
        for name in ("synth_seed", "synth_index"):
            if int(self._param(name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {self._param(name)}")
        self.loop = bool(self._param("loop"))
        self.frame_id = str(self._param("frame_id"))
        self.source = open_source(
            str(self._param("source")),
            fov_deg=float(self._param("fov_deg")),
            synth_seed=int(self._param("synth_seed")),
            synth_index=int(self._param("synth_index")),
            synth_frames=int(self._param("synth_frames")),
            synth_width=int(self._param("synth_width")),
            synth_height=int(self._param("synth_height")),
        )
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
        self.image_pub = self._publisher(Image, "image_topic", qos)
        self.info_pub = self._publisher(CameraInfo, "info_topic", qos)
        self.depth_pub = None
        if bool(self._param("publish_depth")) and isinstance(self.source, SyntheticCamera):
            self.depth_pub = self._publisher(Image, "depth_topic", qos)
        self.frames_published = 0
        self.finished = False
        self.expressions: list[str] = self.source.expressions if isinstance(self.source, SyntheticCamera) else []
        self.timer = self.create_timer(1.0 / rate, self._tick)
        topics = [self.image_pub.topic_name, self.info_pub.topic_name]
        if self.depth_pub is not None:
            topics.append(self.depth_pub.topic_name)
        self.get_logger().info(
            f"publishing {self.source.description} at {rate:g} Hz ({reliability}) on {', '.join(topics)}"
        )
        if self.expressions:
            listed = " | ".join(self.expressions)
            self.get_logger().info(f"synthetic scene expressions: {listed}")

    def _publisher(self, msg_type: type, param: str, qos: QoSProfile) -> Any:
        topic = str(self._param(param))
        try:
            return self.create_publisher(msg_type, topic, qos)
        except InvalidTopicNameException as exc:
            reason = str(exc).splitlines()[0]  # rclpy adds lines with a caret under the bad character
            raise ValueError(f"{param} {topic!r} is not a valid topic name ({reason})") from None

    def _tick(self) -> None:
        frame = self.source.next_frame(self.loop)
        if frame is None:
            self.get_logger().info(f"end of source after {self.frames_published} frames")
            self.timer.cancel()
            self.finished = True
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        height, width = frame.rgb.shape[:2]
        # images nobody subscribes to are not encoded (a matched subscriber is counted at once; the tracker
        # without depth leaves the depth topic unread, and at 640x480 encoding it costs more than the frame)
        if self.image_pub.get_subscription_count() > 0:
            self.image_pub.publish(rgb_to_image(frame.rgb, "rgb8", header))
        depth_pub = self.depth_pub
        if depth_pub is not None and frame.depth is not None and depth_pub.get_subscription_count() > 0:
            depth_pub.publish(depth_to_image(frame.depth, "16UC1", header))
        self.info_pub.publish(camera_info(width, height, *frame.intrinsics, header=header))
        self.frames_published += 1

    def destroy_node(self) -> None:
        source = getattr(self, "source", None)
        if source is not None:
            source.close()
        super().destroy_node()


def spin_until_done(node: CameraSourceNode) -> None:
    """Spin until shutdown (SIGINT/SIGTERM) or, without looping, the end of the source."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while node.context.ok() and not node.finished:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)


def run(argv: Sequence[str], parameter_overrides: dict[str, Any] | None = None) -> int:
    """Start rclpy with ``argv`` (may hold --ros-args), run the node until done; bad parameters raise ValueError."""
    apply_ros_environment()
    rclpy.init(args=list(argv))
    try:
        overrides = [Parameter(name, value=value) for name, value in (parameter_overrides or {}).items()]
        node = CameraSourceNode(parameter_overrides=overrides)
        try:
            spin_until_done(node)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m glus_ros.ros.camera_source [--ros-args -p source:=... --params-file ...]``; exit 2 on bad input."""
    argv = list(sys.argv if argv is None else argv)
    extra = remove_ros_args(argv)[1:]
    if extra:
        print(f"camera_source: error: unexpected arguments {extra} (use --ros-args -p name:=value)", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"camera_source: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
