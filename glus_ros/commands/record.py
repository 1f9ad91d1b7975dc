"""``glus-ros record``: record ROS topics into a rosbag2 (mcap or sqlite3, zstd-compressed), e.g. for training."""

from __future__ import annotations

import argparse
from pathlib import Path

from glus_ros.recording.topics import DEFAULT_RECORD_TOPICS, TARGETS_TOPIC


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="record topics into a rosbag2 (no ros2 bag needed)",
        description="Subscribe to each topic as soon as a publisher appears (its type and QoS are read from the ROS "
        "graph: a latched topic such as the tracker's target set is received even if it was published before the "
        "recorder started) and write the messages as received. Ctrl-C/SIGTERM close the bag cleanly. sqlite3 bags "
        "are committed per message and survive a crash (open the .db3 file); mcap bags are readable only after a "
        "clean stop.",
    )
    parser.add_argument(
        "--topics",
        nargs="+",
        metavar="TOPIC",
        help=f"topics to record (default: {' '.join(DEFAULT_RECORD_TOPICS)}); {TARGETS_TOPIC} is always added",
    )
    parser.add_argument(
        "--no-targets-topic",
        dest="with_targets",
        action="store_false",
        help=f"do not add {TARGETS_TOPIC} (the tracker's latched target set, which convert-bag reads)",
    )
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage (default mcap)")
    parser.add_argument(
        "--compression",
        choices=["zstd", "none"],
        default="zstd",
        help="zstd (default): mcap chunks (sqlite3: each message) compressed; none: raw",
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glus_ros.recording.recorder import record
    from glus_ros.recording.topics import topics_to_record

    topics = topics_to_record(args.topics, args.with_targets)
    summary = record(topics, args.out, storage=args.storage, duration_s=args.duration, compression=args.compression)
    total = sum(summary.counts.values())
    print(
        f"wrote {total} messages in {summary.seconds:.1f} s to {summary.path} ({summary.storage}, "
        f"compression {summary.compression}, {summary.bytes_on_disk / 1e6:.1f} MB)"
    )
    for topic, count in summary.counts.items():
        print(f"  {topic}: {count} ({summary.types.get(topic, '?')})")
    if summary.missing:
        print(f"  never published (not in the bag): {' '.join(summary.missing)}")
    return 0
