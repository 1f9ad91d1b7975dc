"""Record ROS topics into a rosbag2 (mcap or sqlite3) with the rosbags library: ``glus-ros record``.

Why not ``ros2 bag``: the rclpy wheels this project installs from PyPI have no rosbag2. Recording is
generic: each topic's type is read from the ROS graph once a publisher appears, the subscription is raw
(the CDR bytes are written exactly as received, never deserialised) and the bag gets the type's
definition from a rosbags typestore that also knows glus_ros_msgs.

What survives an interruption: SIGINT/SIGTERM stop the recorder, which first takes every message
already delivered to it, then closes the bag (index and metadata.yaml written). sqlite3 bags are also
committed after every message, so a SIGKILL or a crash keeps everything written up to it: open the
``.db3`` file itself (metadata.yaml is missing). An mcap bag keeps its index only in memory until it is
closed, so after a SIGKILL rosbags cannot read it.

Compression (default zstd): mcap bags compress each chunk (about 1 MiB of messages) with zstd, as
rosbag2's mcap plugin does with its ``zstd_fast`` preset; readers (``ros2 bag``, rosbags, Foxglove)
decompress transparently. sqlite3 bags compress each message (rosbag2's "message" compression mode,
named in metadata.yaml), so a crash still keeps every committed message.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.exceptions import InvalidTopicNameException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_full_topic_name import validate_full_topic_name
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime, Typestore
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer, WriterError

from glus_ros.recording.typestore import ensure_type, glus_typestore
from glus_ros.ros_env import apply_ros_environment

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
COMPRESSIONS = ("zstd", "none")
# zstd per storage: mcap compresses whole chunks (better ratio, transparent to readers); sqlite3 can only
# compress message by message (rosbag2 "message" mode; the reader needs metadata.yaml or our zstd check)
_ZSTD_MODE = {"mcap": CompressionMode.STORAGE, "sqlite3": CompressionMode.MESSAGE}
BAG_VERSION = 8  # what ROS 2 Jazzy's rosbag2 writes and reads
DRAIN_MAX_S = 1.0  # on stop: at most this long to write what was already delivered


class BagSink:
    """A rosbags Writer that writes each message as it arrives (ROS-free).

    sqlite3: every message is committed (with ``synchronous=OFF``: data reaches the OS at once, which
    survives the process dying, not the machine losing power); mcap: chunks are flushed at 1 MiB and the
    file is only readable after :meth:`close`. ``compression``: "zstd" (default) or "none".
    """

    def __init__(
        self, path: str | Path, storage: str = "mcap", typestore: Typestore | None = None, compression: str = "zstd"
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        self.path = Path(path)
        if self.path.exists():
            raise ValueError(f"bag {self.path} exists already; rosbags writes new bags only, choose another path")
        self.storage = storage
        self.compression = compression
        self.typestore = typestore if typestore is not None else glus_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        if compression == "zstd":
            self._writer.set_compression(_ZSTD_MODE[storage], CompressionFormat.ZSTD)
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise ValueError(f"cannot create bag {self.path}: {exc}") from None
        self._sqlite = getattr(self._writer.storage, "conn", None) if storage == "sqlite3" else None
        if self._sqlite is not None:
            self._sqlite.execute("PRAGMA synchronous=OFF")
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[Qos] = ()) -> None:
        """Declare a topic before writing to it; the type's definition must be known (else ValueError)."""
        ensure_type(self.typestore, msgtype)
        with self._lock:
            if topic in self._connections:
                raise ValueError(f"topic {topic} is already in bag {self.path}")
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(offered_qos)
            )
            self.counts[topic] = 0
            self._commit()

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialised (CDR) message, received at ``timestamp_ns``."""
        with self._lock:
            if self.closed:
                raise ValueError(f"bag {self.path} is closed")
            self._writer.write(self._connections[topic], int(timestamp_ns), data)
            self.counts[topic] += 1
            self._commit()

    def _commit(self) -> None:
        if self._sqlite is not None:
            self._sqlite.commit()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        """Write the index and metadata.yaml; idempotent."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._writer.close()


def qos_to_rosbags(profile: Any) -> Qos:
    """An rclpy QoSProfile as the rosbags Qos stored in the bag's metadata (``ros2 bag play`` reuses it)."""

    def duration(d: Any) -> QosTime:
        sec, nsec = divmod(int(d.nanoseconds), 1_000_000_000)
        return QosTime(sec=sec, nsec=nsec)

    return Qos(
        history=QosHistory(int(profile.history)),
        depth=int(profile.depth),
        reliability=QosReliability(int(profile.reliability)),
        durability=QosDurability(int(profile.durability)),
        deadline=duration(profile.deadline),
        lifespan=duration(profile.lifespan),
        liveliness=QosLiveliness(int(profile.liveliness)),
        liveliness_lease_duration=duration(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def message_class(msgtype: str) -> type:
    """The installed Python class of ``pkg/msg/Name`` (ValueError if its package is not installed)."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype} is not installed in this Python ({exc})") from None


def normalise_topics(topics: Sequence[str]) -> list[str]:
    """Absolute, validated, de-duplicated topic names (ValueError naming the bad one)."""
    out: list[str] = []
    for topic in topics:
        name = topic if topic.startswith("/") else f"/{topic}"
        try:
            validate_full_topic_name(name)
        except InvalidTopicNameException as exc:
            raise ValueError(f"invalid topic name {topic!r}: {exc}") from None
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no topics to record")
    return out


@dataclass
class RecordSummary:
    """What a recording wrote: messages per topic, their types, topics that never appeared."""

    path: Path
    storage: str
    compression: str = "zstd"
    bytes_on_disk: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0


class TopicRecorder(Node):
    """Subscribes (raw) to each topic once the graph shows a publisher, and writes what arrives into a sink."""

    def __init__(self, topics: Sequence[str], sink: BagSink, depth: int = 100, **kwargs: Any) -> None:
        super().__init__(kwargs.pop("node_name", "glus_recorder"), **kwargs)
        self.sink = sink
        self.depth = depth
        self.pending = list(topics)
        self.types: dict[str, str] = {}
        self.topic_subscriptions: dict[str, Any] = {}
        self.discovery_timer = self.create_timer(0.1, self.discover)
        self.discover()

    def subscription_qos(self, topic: str) -> tuple[QoSProfile, list[Qos]]:
        """Like ros2 bag: reliable (transient local) only when every publisher offers it; plus the offers."""
        offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
        reliable = bool(offered) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
        latched = bool(offered) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        return qos, [qos_to_rosbags(q) for q in offered]

    def _writer_for(self, topic: str) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            self.sink.write(topic, self.get_clock().now().nanoseconds, data)

        return write

    def discover(self) -> None:
        """Subscribe to every pending topic that now has a publisher (type taken from the graph)."""
        if not self.pending:
            self.discovery_timer.cancel()
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in list(self.pending):
            types = graph.get(topic)
            if not types:
                continue
            self.pending.remove(topic)
            if len(types) > 1:
                self.get_logger().error(f"not recording {topic}: publishers disagree on its type {types}")
                continue
            msgtype = types[0]
            try:
                msg_class = message_class(msgtype)
                qos, offered = self.subscription_qos(topic)
                self.sink.add_topic(topic, msgtype, offered)
            except ValueError as exc:
                self.get_logger().error(f"not recording {topic}: {exc}")
                continue
            self.topic_subscriptions[topic] = self.create_subscription(
                msg_class, topic, self._writer_for(topic), qos, raw=True
            )
            self.types[topic] = msgtype
            self.get_logger().info(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()})")


class _StopOnSignals:
    """SIGINT/SIGTERM set an event instead of killing the process, so the bag is always closed."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self.event

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def record(
    topics: Sequence[str],
    out: str | Path,
    storage: str = "mcap",
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    ros_args: Sequence[str] = (),
    compression: str = "zstd",
) -> RecordSummary:
    """Record ``topics`` into a new bag at ``out`` until SIGINT/SIGTERM, ``stop`` or ``duration_s``.

    Starts and shuts down its own rclpy context (with the SHM DDS environment applied).
    """
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration_s}")
    topics = normalise_topics(topics)
    with _StopOnSignals() as signalled:  # from here on a signal only ends the loop: the bag is always closed
        sink = BagSink(out, storage, compression=compression)
        summary = RecordSummary(path=Path(out), storage=storage, compression=compression)
        start = time.monotonic()
        context = Context()
        node: TopicRecorder | None = None
        executor: SingleThreadedExecutor | None = None
        try:
            apply_ros_environment()
            rclpy.init(
                args=[sys.argv[0], "--ros-args", *ros_args] if ros_args else [sys.argv[0]],
                context=context,
                signal_handler_options=SignalHandlerOptions.NO,
            )
            executor = SingleThreadedExecutor(context=context)
            node = TopicRecorder(topics, sink, context=context)
            executor.add_node(node)
            deadline = None if duration_s is None else start + duration_s
            while not signalled.is_set() and not (stop is not None and stop.is_set()):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                executor.spin_once(timeout_sec=0.05)
            _drain(executor, node, sink)
            summary.types = dict(node.types)
            summary.missing = list(node.pending)
        finally:
            sink.close()
            if executor is not None:
                executor.shutdown(timeout_sec=1.0)
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown(context=context)
    summary.counts = dict(sink.counts)
    summary.seconds = time.monotonic() - start
    summary.bytes_on_disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return summary


def _drain(executor: SingleThreadedExecutor, node: TopicRecorder, sink: BagSink) -> None:
    """Write the messages DDS has already delivered (e.g. acknowledged just before SIGTERM), then return.

    With the discovery timer cancelled only subscriptions have work: two spins in a row that write
    nothing mean the queues are empty. A busy stream ends the drain after DRAIN_MAX_S at the latest.
    """
    node.discovery_timer.cancel()
    end = time.monotonic() + DRAIN_MAX_S
    idle = 0
    while idle < 2 and time.monotonic() < end:
        before = sink.total
        executor.spin_once(timeout_sec=0.0)
        idle = idle + 1 if sink.total == before else 0
