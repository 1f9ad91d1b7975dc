"""``glus-ros record``: record ROS topics into a rosbag2 (mcap or sqlite3), e.g. camera + commands for training."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="record topics into a rosbag2 (no ros2 bag needed)",
        description="Subscribe to each topic as soon as a publisher appears (its type is read from the ROS graph) "
        "and write the messages as received. Ctrl-C/SIGTERM close the bag cleanly. sqlite3 bags are committed per "
        "message and survive a crash (open the .db3 file); mcap bags are readable only after a clean stop.",
    )
    parser.add_argument("--topics", nargs="+", required=True, metavar="TOPIC", help="topics to record")
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage (default mcap)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glus_ros.recording.recorder import record

    summary = record(args.topics, args.out, storage=args.storage, duration_s=args.duration)
    total = sum(summary.counts.values())
    print(f"wrote {total} messages in {summary.seconds:.1f} s to {summary.path} ({summary.storage})")
    for topic, count in summary.counts.items():
        print(f"  {topic}: {count} ({summary.types.get(topic, '?')})")
    if summary.missing:
        print(f"  never published (not in the bag): {' '.join(summary.missing)}")
    return 0
