"""Turn a recorded bag (camera images + referring commands + masks) into a MeViS-layout training split.

Why: the training loader reads MeViS folders; recordings on a robot become training data without ROS
(only the rosbags library reads the bag). Output under ``<out>/<split>/``::

    JPEGImages/<video>/00000.jpg ...
    meta_expressions.json   videos -> <video> -> {frames, expressions: {"0": {exp, obj_id, anno_id}}}
    mask_dict.json          anno_id -> [COCO RLE per frame, or null where the object is absent]
    bag_source.json         provenance: the bag, its topics and each frame's header stamp

Videos: the image stream is split into runs with a constant set of targets; each run is one video with
one expression per target. Where the targets come from (glus_ros.recording.targets): the tracker's
latched snapshots on /glus/targets, else its command topics (std_msgs/String on /glus/command: the text
replaces target ``target_0``, an empty string removes it; glus_ros_msgs ReferringCommand(Array) on
/glus/commands: ADD/REPLACE/REMOVE/CLEAR), else the target_id and expression of its results on
/glus/segmentation; or one ``expression`` for the whole bag. Snapshots and results apply by header
stamp, commands by bag (receive) time.

Labels: a mono8 sensor_msgs/Image topic (one target at a time) or the tracker's TargetResultArray /
TargetResult (pseudo-labels matched by target_id, else by expression). A label belongs to the image with
the same header stamp (or the nearest within ``stamp_tolerance_s``). With a label topic only frames that
have a label for every target of their video are kept; without one, no mask_dict.json is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from glus_ros.datasets.rle import encode_mask
from glus_ros.recording.targets import (
    COMMAND_ARRAY_TYPE,
    COMMAND_TYPES,
    NS,
    RESULT_ARRAY_TYPE,
    RESULT_TYPE,
    RESULT_TYPES,
    Target,
    TargetTimeline,
    TimelineBuilder,
)
from glus_ros.recording.topics import DEFAULT_COMMAND_TOPICS, SEGMENTATION_TOPIC, TARGETS_TOPIC
from glus_ros.ros.image_conversion import compressed_to_rgb, image_to_rgb, mask_from_image

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
LABEL_TYPES = ("sensor_msgs/msg/Image", RESULT_TYPE, RESULT_ARRAY_TYPE)
LOST = 2  # TargetResult.state
_NS = NS
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame; CDR data starts with its encapsulation header instead


class BagReadError(ValueError):
    """The bag cannot be opened or read (missing metadata, truncated file, not a bag); names the path."""


@dataclass
class ConversionSummary:
    """What convert_bag wrote and what it left out, and why."""

    split_dir: Path
    videos: int = 0
    frames: int = 0
    expressions: int = 0
    images_read: int = 0
    skipped_no_target: int = 0  # images while no expression was active
    skipped_unlabeled: int = 0  # images without a label for every target of their video
    skipped_every_n: int = 0
    skipped_undecodable: int = 0  # images whose encoding or compressed data could not be decoded
    labels: int = 0
    commands: int = 0  # messages the targets were read from (snapshots, commands or results)
    targets_source: str = ""  # "snapshots", "commands", "results" or "expression"


def _bag_path(bag: Path) -> Path:
    """The path rosbags should open: the bag folder, or its only storage file if metadata.yaml is missing.

    A recorder killed without closing the bag leaves no metadata.yaml; its .db3 is still readable.
    """
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    if bag.is_dir() and not (bag / "metadata.yaml").is_file():
        files = sorted(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
        if len(files) == 1:
            return files[0]
        raise BagReadError(f"{bag}: not a rosbag2 folder (no metadata.yaml and {len(files)} .db3/.mcap files)")
    return bag


class BagMessages:
    """A rosbags AnyReader whose failures (corrupt or truncated data) become BagReadError naming the bag."""

    def __init__(self, bag: Path) -> None:
        from rosbags.highlevel import AnyReader

        self.bag = bag
        path = _bag_path(bag)
        try:
            self.reader = AnyReader([path])
            self.reader.open()
        except FileNotFoundError:
            raise
        except Exception as exc:  # rosbags raises many kinds for corrupt files (ReaderError, apsw, struct...)
            raise self._error(exc) from None
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}

    def _error(self, exc: BaseException) -> BagReadError:
        mcap = self.bag.suffix == ".mcap" or (self.bag.is_dir() and any(self.bag.glob("*.mcap")))
        hint = " (an mcap bag whose recorder was killed has no index; sqlite3 bags survive that)" if mcap else ""
        return BagReadError(f"cannot read bag {self.bag}: {type(exc).__name__}: {exc}{hint}")

    def messages(self, topics: list[str]) -> Iterator[tuple[str, str, int, Any]]:
        """(topic, msgtype, bag time ns, deserialised message) of ``topics`` in bag-time order."""
        connections = [c for c in self.reader.connections if c.topic in topics]
        if not connections:
            return
        stream = self.reader.messages(connections=connections)
        while True:
            try:
                connection, timestamp, raw = next(stream)
                msg = self.reader.deserialize(cdr_bytes(raw), connection.msgtype)
            except StopIteration:
                return
            except Exception as exc:
                raise self._error(exc) from None
            yield connection.topic, connection.msgtype, timestamp, msg

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # closing a half-broken reader must not hide the first error
            pass


def cdr_bytes(raw: bytes | memoryview) -> bytes | memoryview:
    """A stored message as CDR: zstd frames decompressed (a message-compressed .db3 read without its
    metadata.yaml, e.g. after the recorder was killed, reaches us still compressed)."""
    if bytes(raw[:4]) != _ZSTD_MAGIC:
        return raw
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        from backports import zstd  # what rosbags itself uses before 3.14
    return zstd.decompress(bytes(raw))


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * _NS + int(header.stamp.nanosec)


def _label_key(target: Target) -> str:
    return f"id:{target.target_id}" if target.target_id else f"exp:{target.expression}"


class LabelIndex:
    """Masks per image stamp (COCO RLE, or None for 'absent'), looked up exactly or by nearest stamp."""

    def __init__(self, tolerance_ns: int) -> None:
        self.tolerance_ns = tolerance_ns
        self.by_stamp: dict[int, dict[str, dict | None]] = {}
        self._sorted: np.ndarray | None = None

    def add(self, stamp: int, key: str, rle: dict | None) -> None:
        self.by_stamp.setdefault(stamp, {})[key] = rle
        self._sorted = None

    def add_message(self, msgtype: str, msg: Any) -> int:
        """Index one label message; returns how many masks it held."""
        if msgtype == "sensor_msgs/msg/Image":
            mask = mask_from_image(msg)
            self.add(_stamp_ns(msg.header), "*", encode_mask(mask) if mask.any() else None)
            return 1
        results = msg.results if msgtype == RESULT_ARRAY_TYPE else [msg]
        count = 0
        for result in results:
            stamp = _stamp_ns(result.header) if int(result.header.stamp.sec) else _stamp_ns(msg.header)
            if int(result.mask.width) == 0 or int(result.mask.height) == 0:
                continue  # point-only result: no mask to learn from
            mask = mask_from_image(result.mask)
            rle = encode_mask(mask) if mask.any() and int(result.state) != LOST else None
            for key in (f"id:{result.target_id}", f"exp:{str(result.expression).strip()}"):
                self.add(stamp, key, rle)
            count += 1
        return count

    def lookup(self, stamp: int) -> dict[str, dict | None] | None:
        if stamp in self.by_stamp:
            return self.by_stamp[stamp]
        if not self.by_stamp:
            return None
        if self._sorted is None:
            self._sorted = np.array(sorted(self.by_stamp), dtype=np.int64)
        i = int(np.searchsorted(self._sorted, stamp))
        near = [int(self._sorted[j]) for j in (i - 1, i) if 0 <= j < len(self._sorted)]
        best = min(near, key=lambda s: abs(s - stamp))
        return self.by_stamp[best] if abs(best - stamp) <= self.tolerance_ns else None


@dataclass
class _Video:
    name: str
    targets: list[Target]
    frames: list[str] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    masks: list[list[dict | None]] = field(default_factory=list)  # per target, per frame


def _check_topic(topics: dict[str, str], topic: str, allowed: tuple[str, ...], role: str, bag: Path) -> str:
    if topic not in topics:
        if not topics:
            raise ValueError(f"bag {bag} holds no topics (a recording whose topics were never published?)")
        listed = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items()))
        raise ValueError(f"{role} topic {topic} is not in bag {bag}; its topics: {listed}")
    if topics[topic] not in allowed:
        raise ValueError(f"{role} topic {topic} has type {topics[topic]}; expected one of {', '.join(allowed)}")
    return topics[topic]


def _prepare_split(out: Path, split: str) -> Path:
    if not split or "/" in split or split in (".", ".."):
        raise ValueError(f"split name {split!r} must be a plain folder name")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file, not a folder")
    split_dir = out / split
    if split_dir.exists() and any(split_dir.iterdir()):
        raise ValueError(f"{split_dir} is not empty; choose another --out or --split")
    split_dir.mkdir(parents=True, exist_ok=True)
    return split_dir


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode {path} as JPEG")
    path.write_bytes(data.tobytes())


def convert_bag(
    bag: str | Path,
    out: str | Path,
    image_topic: str = "/camera/image_raw",
    command_topic: str | Sequence[str] | None = None,
    label_topic: str | None = None,
    every_n: int = 1,
    split: str = "train",
    expression: str | None = None,
    stamp_tolerance_s: float = 0.01,
    jpeg_quality: int = 95,
    targets_topic: str = TARGETS_TOPIC,
    results_topic: str = SEGMENTATION_TOPIC,
) -> ConversionSummary:
    """Convert ``bag`` into a MeViS-layout split at ``out/split`` (see the module docstring).

    Targets: ``expression`` refers the whole recording to one expression; ``command_topic`` (one topic or
    several; those absent from the bag are skipped, but one must be there) reads only those command topics;
    neither (the default) takes the snapshots on ``targets_topic``, else the tracker's command topics, else
    the expressions in the results on ``results_topic`` (or on ``label_topic`` when it carries results).
    """
    bag, out = Path(bag), Path(out)
    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, got {every_n}")
    if not 0 <= stamp_tolerance_s <= 1.0:
        raise ValueError(f"stamp tolerance must be in [0, 1] s, got {stamp_tolerance_s}")
    if expression is not None and not expression.strip():
        raise ValueError("expression must not be empty")
    explicit = [command_topic] if isinstance(command_topic, str) else list(command_topic or [])
    if command_topic is not None and not explicit:
        raise ValueError("give at least one command topic (or none, to read the targets topic)")
    reader = BagMessages(bag)
    try:
        topics = reader.topics
        image_type = _check_topic(topics, image_topic, IMAGE_TYPES, "image", bag)
        label_type = _check_topic(topics, label_topic, LABEL_TYPES, "label", bag) if label_topic else None
        builder = None if expression is not None else _timeline_builder(
            topics, bag, explicit, targets_topic, results_topic, label_topic if label_type in RESULT_TYPES else None
        )
        split_dir = _prepare_split(out, split)
        summary = ConversionSummary(split_dir=split_dir)
        try:
            timeline, labels = _read_targets_and_labels(
                reader, builder, expression, label_topic, stamp_tolerance_s, summary, bool(explicit), targets_topic,
                builder.results_topic if builder is not None and builder.results_topic else results_topic,
            )
            videos = _convert_images(
                reader,
                image_topic,
                image_type,
                timeline,
                labels,
                label_type == "sensor_msgs/msg/Image",
                every_n,
                split_dir,
                jpeg_quality,
                bag,
                summary,
            )
            if not videos:
                raise ValueError(
                    f"no frames converted from {bag}: {summary.images_read} images on {image_topic}, "
                    f"{summary.skipped_no_target} without an active expression ({summary.commands} messages "
                    f"from {summary.targets_source} on {' '.join(timeline.topics) or '-'}"
                    f"{', applied by header stamp' if timeline.by_stamp else ''}), "
                    f"{summary.skipped_unlabeled} without a label on {label_topic} ({summary.labels} labels), "
                    f"{summary.skipped_undecodable} undecodable"
                )
            _write_split(split_dir, videos, bag, image_topic, timeline, label_topic, label_topic is not None)
        except BaseException:
            remove_partial_split(split_dir)  # it was empty or absent before: leave nothing half-written
            raise
    finally:
        reader.close()
    summary.videos = len(videos)
    summary.frames = sum(len(v.frames) for v in videos)
    summary.expressions = sum(len(v.targets) for v in videos)
    return summary


def _timeline_builder(
    topics: dict[str, str],
    bag: Path,
    explicit: list[str],
    targets_topic: str,
    results_topic: str,
    label_results_topic: str | None,
) -> TimelineBuilder:
    """Which topics the targets may come from; checks their types (explicit command topics must exist)."""
    if explicit:
        present = [t for t in explicit if t in topics] or explicit[:1]  # none there: the error names one
        for topic in present:
            _check_topic(topics, topic, COMMAND_TYPES, "command", bag)
        return TimelineBuilder(None, present, None)
    if targets_topic in topics:
        _check_topic(topics, targets_topic, (COMMAND_ARRAY_TYPE,), "targets", bag)
    commands = [t for t in DEFAULT_COMMAND_TOPICS if t in topics]
    for topic in commands:
        _check_topic(topics, topic, COMMAND_TYPES, "command", bag)
    results = label_results_topic or results_topic
    if results in topics:
        _check_topic(topics, results, RESULT_TYPES, "results", bag)
    return TimelineBuilder(targets_topic if targets_topic in topics else None, commands,
                           results if results in topics else None)


def _no_targets_error(bag: Path, topics: dict[str, str], targets_topic: str, results_topic: str) -> ValueError:
    looked = [f"snapshots on {targets_topic}", f"commands on {' and '.join(DEFAULT_COMMAND_TOPICS)}",
              f"expressions in the results on {results_topic}"]
    listed = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
    return ValueError(
        f"no targets in bag {bag}: looked for {', '.join(looked)}, and none holds a target (absent or empty); "
        f"its topics: {listed}. Record {targets_topic} (glus-ros record does by default), name the command topic "
        "with --command-topic, or give --expression for the whole bag"
    )


def _read_targets_and_labels(
    reader: BagMessages,
    builder: TimelineBuilder | None,
    expression: str | None,
    label_topic: str | None,
    stamp_tolerance_s: float,
    summary: ConversionSummary,
    explicit: bool,
    targets_topic: str,
    results_topic: str,
) -> tuple[TargetTimeline, LabelIndex | None]:
    """Pass 1: the target messages (targets, commands, results) and the labels, by image stamp.

    The results topic is read here only when it is the label topic; otherwise only when the bag has
    neither snapshots nor commands (a second pass), since masks make it large.
    """
    labels = LabelIndex(round(stamp_tolerance_s * _NS)) if label_topic else None
    wanted = [label_topic] if label_topic else []
    if builder is not None:
        wanted += [t for t in (builder.targets_topic, *builder.command_topics) if t]
        if builder.results_topic == label_topic:
            wanted.append(builder.results_topic)
    for topic, msgtype, t_ns, msg in reader.messages(list(dict.fromkeys(wanted))):
        if topic == label_topic and labels is not None:
            try:
                summary.labels += labels.add_message(msgtype, msg)
            except ValueError as exc:
                raise ValueError(f"{reader.bag}: label on {topic} at bag time {t_ns / _NS:.3f} s: {exc}") from None
        if builder is not None:
            builder.add(topic, msgtype, t_ns, msg)
    if builder is None:
        summary.targets_source = "expression"
        return TargetTimeline("expression", [], False, [(0, [Target("", str(expression).strip())])], 0), labels
    timeline = builder.timeline()
    if timeline is None and builder.results_topic and builder.results_topic != label_topic:
        for topic, msgtype, t_ns, msg in reader.messages([builder.results_topic]):
            builder.add(topic, msgtype, t_ns, msg)
        timeline = builder.timeline()
    if timeline is None and explicit:
        raise ValueError(f"no command in bag {reader.bag} on {' '.join(builder.command_topics)}")
    if timeline is None:
        raise _no_targets_error(reader.bag, reader.topics, targets_topic, results_topic)
    summary.targets_source, summary.commands = timeline.source, timeline.messages
    return timeline, labels


def _convert_images(
    reader: BagMessages,
    image_topic: str,
    image_type: str,
    timeline: TargetTimeline,
    labels: LabelIndex | None,
    label_is_image: bool,
    every_n: int,
    split_dir: Path,
    jpeg_quality: int,
    bag: Path,
    summary: ConversionSummary,
) -> list[_Video]:
    """Pass 2: the images, in bag order; a new video starts wherever the target timeline changes."""
    videos: list[_Video] = []
    current: _Video | None = None
    change_index = -1  # index in the timeline of the change in force for the current video
    seen_in_run = 0
    for _topic, _type, t_ns, msg in reader.messages([image_topic]):
        summary.images_read += 1
        stamp = _stamp_ns(msg.header) or t_ns
        index, targets = timeline.at(t_ns, stamp)
        if index != change_index:
            change_index = index
            current, seen_in_run = None, 0  # the target set changed: the next kept frame starts a video
        if not targets:
            summary.skipped_no_target += 1
            continue
        seen_in_run += 1
        if (seen_in_run - 1) % every_n:
            summary.skipped_every_n += 1
            continue
        masks: list[dict | None] = []
        if labels is not None:
            found = labels.lookup(stamp)
            if label_is_image and len(targets) > 1:
                raise ValueError(
                    f"{bag}: {len(targets)} targets are active at {stamp / _NS:.3f} s but the mask topic carries "
                    "one mask per image; use the tracker's TargetResultArray topic as labels"
                )
            keys = ["*"] if label_is_image else [_label_key(t) for t in targets]
            if found is None or any(k not in found for k in keys):
                summary.skipped_unlabeled += 1
                continue
            masks = [found[k] for k in keys]
        try:
            rgb = image_to_rgb(msg) if image_type == "sensor_msgs/msg/Image" else compressed_to_rgb(msg)
        except ValueError as exc:  # one broken frame must not cost the whole recording
            if not summary.skipped_undecodable:
                log.warning(
                    "%s: skipping undecodable images on %s, the first at %.3f s: %s", bag, image_topic, stamp / _NS, exc
                )
            summary.skipped_undecodable += 1
            continue
        if labels is not None:
            _check_mask_sizes(masks, rgb.shape[:2], stamp, bag)
        if current is None:
            current = _Video(name=f"{bag.stem if bag.is_file() else bag.name}_{len(videos):04d}", targets=list(targets))
            current.masks = [[] for _ in targets]
            videos.append(current)
            (split_dir / "JPEGImages" / current.name).mkdir(parents=True)
        frame = f"{len(current.frames):05d}"
        _write_jpeg(split_dir / "JPEGImages" / current.name / f"{frame}.jpg", rgb, jpeg_quality)
        current.frames.append(frame)
        current.stamps.append(stamp)
        for per_target, rle in zip(current.masks, masks, strict=False):
            per_target.append(rle)
    return videos


def _check_mask_sizes(masks: list[dict | None], size: tuple[int, int], stamp: int, bag: Path) -> None:
    for rle in masks:
        if rle is not None and tuple(rle["size"]) != tuple(size):
            raise ValueError(
                f"{bag}: mask at {stamp / _NS:.3f} s is {rle['size'][1]}x{rle['size'][0]}, "
                f"its image is {size[1]}x{size[0]}"
            )


def _write_split(
    split_dir: Path,
    videos: list[_Video],
    bag: Path,
    image_topic: str,
    timeline: TargetTimeline,
    label_topic: str | None,
    labelled: bool,
) -> None:
    meta: dict[str, Any] = {"videos": {}}
    mask_dict: dict[str, list[dict | None]] = {}
    provenance: dict[str, Any] = {
        "bag": str(bag),
        "image_topic": image_topic,
        "targets_source": timeline.source,
        "targets_topics": timeline.topics,
        "label_topic": label_topic,
        "videos": {},
    }
    next_anno = 0
    for video in videos:
        expressions: dict[str, Any] = {}
        for obj, (target, per_frame) in enumerate(zip(video.targets, video.masks, strict=True)):
            entry: dict[str, Any] = {"exp": target.expression, "obj_id": [obj]}
            if labelled:
                entry["anno_id"] = [str(next_anno)]
                mask_dict[str(next_anno)] = per_frame
                next_anno += 1
            expressions[str(obj)] = entry
        meta["videos"][video.name] = {"frames": video.frames, "expressions": expressions}
        provenance["videos"][video.name] = {
            "stamps_ns": video.stamps,
            "target_ids": [t.target_id for t in video.targets],
        }
    (split_dir / "meta_expressions.json").write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
    if labelled:
        (split_dir / "mask_dict.json").write_text(json.dumps(mask_dict, separators=(",", ":")), encoding="utf-8")
    (split_dir / "bag_source.json").write_text(json.dumps(provenance, indent=1), encoding="utf-8")


def remove_partial_split(split_dir: Path) -> None:
    """Delete a split folder convert_bag created but could not finish (only what it writes)."""
    for name in ("JPEGImages", "meta_expressions.json", "mask_dict.json", "bag_source.json"):
        path = split_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if split_dir.is_dir() and not any(split_dir.iterdir()):
        split_dir.rmdir()
