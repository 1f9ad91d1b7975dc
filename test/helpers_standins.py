"""Stand-ins for ROS 2 Python packages the PyPI wheels lack (cv_bridge, message_filters, tf2_ros).

Each is the source of a small but honest implementation of the real package's Python API (the calls
glus_ros/ros/bridges.py makes on a ROS 2 Jazzy install), written into a temporary folder and put first on
sys.path by :func:`install_stand_in`. Never mocks of glus_ros itself.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

CV_BRIDGE = '''
import numpy as np

calls = []


class CvBridgeError(TypeError):
    pass


class CvBridge:
    """Stand-in: bgr8/rgb8 to rgb8, and passthrough for 16UC1 / 32FC1, like cv_bridge's own numpy paths."""

    def imgmsg_to_cv2(self, img_msg, desired_encoding="passthrough"):
        calls.append((img_msg.encoding, desired_encoding))
        layouts = {"bgr8": ("u1", 3), "rgb8": ("u1", 3), "16UC1": ("<u2", 1), "32FC1": ("<f4", 1)}
        if img_msg.encoding not in layouts:
            raise CvBridgeError(f"unsupported encoding {img_msg.encoding}")
        dtype, channels = layouts[img_msg.encoding]
        pixels = np.frombuffer(bytes(img_msg.data), dtype).reshape(img_msg.height, img_msg.width, channels)
        if desired_encoding == "passthrough":
            return pixels[:, :, 0] if channels == 1 else pixels
        if desired_encoding == "rgb8" and channels == 3:
            return pixels[:, :, ::-1] if img_msg.encoding == "bgr8" else pixels
        raise CvBridgeError(f"cannot convert {img_msg.encoding} to {desired_encoding}")
'''

MESSAGE_FILTERS = '''
seen = []


class SimpleFilter:
    def __init__(self):
        self.callbacks = {}

    def registerCallback(self, cb, *args):
        conn = len(self.callbacks)
        self.callbacks[conn] = (cb, args)
        return conn

    def signalMessage(self, *msg):
        for cb, args in self.callbacks.values():
            cb(*(msg + args))


class ApproximateTimeSynchronizer(SimpleFilter):
    """Stand-in: keeps the newest message per input and emits when all lie within slop of each other."""

    def __init__(self, fs, queue_size, slop, allow_headerless=False):
        super().__init__()
        self.slop_ns = int(slop * 1e9)
        self.latest = [None] * len(fs)
        for i, f in enumerate(fs):
            f.registerCallback(self.add, i)

    def add(self, msg, index):
        stamp = msg.header.stamp
        seen.append((index, stamp.sec, stamp.nanosec))
        self.latest[index] = (stamp.sec * 10**9 + stamp.nanosec, msg)
        if all(self.latest):
            stamps = [s for s, _ in self.latest]
            if max(stamps) - min(stamps) <= self.slop_ns:
                msgs = [m for _, m in self.latest]
                self.latest = [None] * len(self.latest)
                self.signalMessage(*msgs)
'''

TF2_ROS = '''
from geometry_msgs.msg import TransformStamped


class TransformException(Exception):
    pass


class Buffer:
    """Stand-in: one static transform camera -> base_link (90 degrees about z, then 1 m along x)."""

    def __init__(self, *args, **kwargs):
        self.lookups = []

    def lookup_transform(self, target_frame, source_frame, time, timeout=None):
        self.lookups.append((target_frame, source_frame, time.nanoseconds))
        if target_frame != "base_link":
            raise TransformException(f'"{target_frame}" passed to lookupTransform does not exist')
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = target_frame, source_frame
        t.transform.translation.x = 1.0
        t.transform.rotation.z = 0.7071067811865476
        t.transform.rotation.w = 0.7071067811865476
        return t


class TransformListener:
    def __init__(self, buffer, node, *args, **kwargs):
        self.buffer, self.node = buffer, node
'''


def install_stand_in(folder: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> Any:
    """Write package ``name`` with source ``code`` under ``folder``, first on sys.path (undone after the test);
    returns the imported module, or None when importing it fails (a broken package)."""
    package = folder / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(sys.modules, name, None)  # records what was there (usually nothing): undone after the test
    del sys.modules[name]  # ... and now nothing is: the import below finds the stand-in
    try:
        return __import__(name)
    except Exception:
        return None  # a broken package: what the code under test imports next fails the same way
