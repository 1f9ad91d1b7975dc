"""The ROS libraries a full ROS 2 install has and the PyPI wheels lack: cv_bridge, message_filters and tf2_ros.

Where they are importable (a Jazzy install: ``rosdep`` installs them from package.xml) the tracker uses them:
cv_bridge converts images (every encoding it knows), message_filters' ApproximateTimeSynchronizer pairs
colour and depth, and tf2_ros makes the ``target_frame`` option available. Where they are not (this
project's pip-only set-up) the project's own :mod:`glus_ros.ros.image_conversion` and
:mod:`glus_ros.ros.sync` do the same work, and ``target_frame`` is refused with a clear message.

Each module is imported when the node configures or activates, not when this module is imported, so the
choice follows the environment of the running process.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glus_ros.ros import image_conversion
from glus_ros.ros.sync import ApproximateTimeSync, Match

log = logging.getLogger(__name__)

BUILTIN = "glus_ros"


def optional_module(name: str) -> tuple[Any | None, str]:
    """(module, '') when ``name`` imports, else (None, why not). A module that is present but broken (e.g.
    PyPI's ROS 1 ``cv-bridge`` port under numpy 2) counts as absent: its error is the reason."""
    try:
        return importlib.import_module(name), ""
    except ImportError as exc:
        return None, f"{name} is not installed ({exc})"
    except Exception as exc:  # any import-time failure of a third-party module: not usable
        return None, f"{name} failed to import: {type(exc).__name__}: {exc}"


# --- images -----------------------------------------------------------------------------------------------


class ImageDecoder:
    """sensor_msgs Image / CompressedImage -> numpy, through cv_bridge when it is given, else our own decoders.

    Both paths give the same contract: (H, W, 3) uint8 RGB, or (H, W) float32 depth in metres (16UC1/mono16
    millimetres scaled, 32FC1 as is; 0, NaN and inf stay "no depth"), and ValueError for what cannot be decoded.
    """

    def __init__(self, bridge: Any | None = None, reason: str = "") -> None:
        self._bridge = bridge
        self.backend = "cv_bridge" if bridge is not None else BUILTIN
        self.reason = reason  # why the builtin decoders are used ('' with cv_bridge)

    def rgb(self, msg: Any) -> np.ndarray:
        if self._bridge is None:
            return image_conversion.image_to_rgb(msg)
        return _rgb_array(self._convert("imgmsg_to_cv2", msg, "rgb8"), msg.encoding)

    def compressed_rgb(self, msg: Any) -> np.ndarray:
        if self._bridge is None:
            return image_conversion.compressed_to_rgb(msg)
        return _rgb_array(self._convert("compressed_imgmsg_to_cv2", msg, "rgb8"), msg.format)

    def depth_metres(self, msg: Any) -> np.ndarray:
        if self._bridge is None:
            return image_conversion.depth_to_metres(msg)
        if msg.encoding not in image_conversion.SUPPORTED_DEPTH_ENCODINGS:  # same check either way
            raise image_conversion.UnsupportedEncodingError(msg.encoding, image_conversion.SUPPORTED_DEPTH_ENCODINGS)
        values = np.asarray(self._convert("imgmsg_to_cv2", msg, "passthrough"))
        return image_conversion.depth_values_to_metres(values, msg.encoding)

    def _convert(self, method: str, msg: Any, encoding: str) -> Any:
        try:
            return getattr(self._bridge, method)(msg, desired_encoding=encoding)
        except Exception as exc:  # CvBridgeError (a TypeError) and whatever OpenCV raises
            what = getattr(msg, "encoding", None) or getattr(msg, "format", "?")
            raise ValueError(f"cv_bridge cannot convert a {what!r} image to {encoding}: {exc}") from exc


def _rgb_array(image: Any, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"cv_bridge gave a {image.dtype} array of shape {image.shape} for a {what!r} image, "
                         "expected (H, W, 3) uint8")
    return np.ascontiguousarray(image)


def image_decoder() -> ImageDecoder:
    """cv_bridge's CvBridge when the module imports and constructs, else the builtin decoders."""
    module, reason = optional_module("cv_bridge")
    if module is not None:
        try:
            return ImageDecoder(module.CvBridge())
        except Exception as exc:
            reason = f"cv_bridge.CvBridge() failed: {type(exc).__name__}: {exc}"
    return ImageDecoder(None, reason)


# --- colour/depth pairing ---------------------------------------------------------------------------------


@dataclass
class _Stamped:
    """What message_filters needs of a message: ``header.stamp``; ``item`` is what the tracker pairs."""

    header: Any
    name: str
    stamp_s: float
    item: Any


class MessageFiltersSync:
    """message_filters' ApproximateTimeSynchronizer behind :class:`ApproximateTimeSync`'s ``push`` interface.

    One ``SimpleFilter`` per input is fed by the node's own subscriptions (so QoS, decoding and the
    depth-timeout fallback stay the node's); matched sets come back from the synchroniser's callback.
    message_filters counts no drops, so ``stats`` is None.
    """

    stats = None

    def __init__(self, module: Any, names: Sequence[str], slop_s: float, queue_size: int) -> None:
        self.names = tuple(names)
        self._inputs = {name: module.SimpleFilter() for name in self.names}
        self._sync = module.ApproximateTimeSynchronizer([self._inputs[n] for n in self.names], queue_size, slop_s)
        self._sync.registerCallback(self._matched)
        self._lock = threading.Lock()
        self._ready: list[Match] = []

    def _matched(self, *messages: _Stamped) -> None:
        ordered = sorted(messages, key=lambda m: self.names.index(m.name))
        self._ready.append(Match(self.names, tuple(m.stamp_s for m in ordered), tuple(m.item for m in ordered)))

    def push(self, name: str, stamp: float, item: Any) -> list[Match]:
        from std_msgs.msg import Header

        if name not in self._inputs:
            raise ValueError(f"unknown sync input {name!r}; inputs are {list(self.names)}")
        with self._lock:  # the synchroniser calls back synchronously, inside signalMessage
            self._inputs[name].signalMessage(_Stamped(Header(stamp=image_conversion.float_to_stamp(stamp)),
                                                      name, float(stamp), item))
            ready, self._ready = self._ready, []
        return ready


def colour_depth_sync(names: Sequence[str], slop_s: float, queue_size: int) -> tuple[Any, str, str]:
    """(synchroniser with ``push``, backend name, why the builtin one) for approximate-time pairing."""
    module, reason = optional_module("message_filters")
    if module is not None:
        try:
            return MessageFiltersSync(module, names, slop_s, queue_size), "message_filters", ""
        except Exception as exc:
            reason = f"message_filters.ApproximateTimeSynchronizer failed: {type(exc).__name__}: {exc}"
    return ApproximateTimeSync(names, slop_s, queue_size), BUILTIN, reason


# --- tf -------------------------------------------------------------------------------------------------


def rotate(quaternion: tuple[float, float, float, float], vector: tuple[float, float, float]) -> np.ndarray:
    """``vector`` rotated by the unit quaternion (x, y, z, w) (ROS order); the quaternion is normalised first."""
    q = np.asarray(quaternion, dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"rotation quaternion {tuple(quaternion)} has no direction")
    x, y, z, w = q / norm
    u = np.array([x, y, z])
    v = np.asarray(vector, dtype=np.float64)
    return v + 2.0 * np.cross(u, np.cross(u, v) + w * v)


def apply_transform(transform: Any, point: tuple[float, float, float]) -> tuple[float, float, float]:
    """A geometry_msgs/Transform (translation + rotation) applied to ``point``."""
    r, t = transform.rotation, transform.translation
    moved = rotate((r.x, r.y, r.z, r.w), point) + np.array([t.x, t.y, t.z])
    return float(moved[0]), float(moved[1]), float(moved[2])


class PointTransformer:
    """Points from the camera frame into ``target_frame`` with a tf2_ros Buffer fed by a TransformListener."""

    def __init__(self, module: Any, node: Any) -> None:
        self._module = module
        self.buffer = module.Buffer()
        self.listener = module.TransformListener(self.buffer, node)

    def transform(self, point: tuple[float, float, float], source_frame: str, target_frame: str,
                  stamp: Any) -> tuple[float, float, float]:
        """``point`` in ``target_frame`` at the image's ``stamp``; LookupError when tf cannot say."""
        from rclpy.time import Time

        try:
            stamped = self.buffer.lookup_transform(target_frame, source_frame, Time.from_msg(stamp))
        except self._module.TransformException as exc:
            raise LookupError(f"no transform {source_frame} -> {target_frame} at the image stamp: {exc}") from exc
        return apply_transform(stamped.transform, point)


def tf_module() -> tuple[Any | None, str]:
    """(tf2_ros, '') where ``target_frame`` can work, else (None, why not)."""
    module, reason = optional_module("tf2_ros")
    if module is not None and not all(hasattr(module, a) for a in ("Buffer", "TransformListener",
                                                                   "TransformException")):
        return None, "tf2_ros has no Buffer / TransformListener / TransformException"
    return module, reason


def vision_msgs_module() -> tuple[Any | None, str]:
    """(vision_msgs.msg, '') where the detection outputs can be published, else (None, why not)."""
    module, reason = optional_module("vision_msgs.msg")
    needed = ("Detection2D", "Detection2DArray", "Detection3D", "Detection3DArray", "ObjectHypothesisWithPose")
    if module is not None and not all(hasattr(module, name) for name in needed):
        return None, "vision_msgs.msg lacks " + ", ".join(n for n in needed if not hasattr(module, n))
    return module, reason
