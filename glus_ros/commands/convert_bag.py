"""``glus-ros convert-bag``: a recorded bag (images + referring commands + masks) -> MeViS-layout training split."""

from __future__ import annotations

import argparse
from pathlib import Path

from glus_ros.recording.topics import SEGMENTATION_TOPIC, TARGETS_TOPIC


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="convert a rosbag2 (camera + commands + masks) into a MeViS-layout training split",
        description="Writes <out>/<split>/{JPEGImages,meta_expressions.json,mask_dict.json,bag_source.json}. "
        "Each run of images with a constant set of targets (from the tracker's /glus/targets snapshots, its command "
        "topics, or the expressions in its results) becomes one video. Masks come from a "
        "mono8 image topic or the tracker's TargetResultArray (pseudo-labels), matched to images by stamp.",
    )
    parser.add_argument("bag", type=Path, help="bag folder, or its .db3/.mcap file")
    parser.add_argument("--out", type=Path, required=True, help="dataset root (the split folder goes inside)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="Image or CompressedImage topic")
    parser.add_argument(
        "--command-topic",
        nargs="+",
        metavar="TOPIC",
        help="read the targets only from these std_msgs/String and/or glus_ros_msgs ReferringCommand(Array) topics; "
        "those missing from the bag are skipped (default: the snapshots on --targets-topic, else the tracker's "
        "/glus/command /glus/commands, else the expressions in the results on --results-topic)",
    )
    parser.add_argument(
        "--targets-topic", default=TARGETS_TOPIC, help=f"the tracker's latched target set (default {TARGETS_TOPIC})"
    )
    parser.add_argument(
        "--results-topic",
        default=SEGMENTATION_TOPIC,
        help=f"TargetResultArray whose expressions are the targets when nothing else was recorded (default "
        f"{SEGMENTATION_TOPIC}; the --label-topic when it carries results)",
    )
    parser.add_argument("--expression", help="one expression for the whole bag instead of a command topic")
    parser.add_argument(
        "--label-topic", help="mono8 mask Image topic (e.g. /glus/mask) or TargetResultArray (/glus/segmentation)"
    )
    parser.add_argument("--every-n", type=int, default=1, help="keep every n-th image (default 1)")
    parser.add_argument("--split", default="train", help="split folder name (default train)")
    parser.add_argument(
        "--stamp-tolerance", type=float, default=0.01, help="max label/image stamp difference [s] (default 0.01)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glus_ros.recording.bag_to_dataset import convert_bag

    summary = convert_bag(
        args.bag,
        args.out,
        image_topic=args.image_topic,
        command_topic=None if args.expression else args.command_topic,
        targets_topic=args.targets_topic,
        results_topic=args.results_topic,
        label_topic=args.label_topic,
        every_n=args.every_n,
        split=args.split,
        expression=args.expression,
        stamp_tolerance_s=args.stamp_tolerance,
    )
    print(
        f"wrote {summary.videos} videos, {summary.frames} frames, {summary.expressions} expressions to "
        f"{summary.split_dir} (targets from {summary.targets_source}; read {summary.images_read} images; "
        f"skipped {summary.skipped_no_target} without an "
        f"expression, {summary.skipped_unlabeled} without a label, {summary.skipped_every_n} by --every-n, "
        f"{summary.skipped_undecodable} undecodable)"
    )
    return 0
