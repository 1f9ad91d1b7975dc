"""``glus-ros convert-bag``: a recorded bag (images + referring commands + masks) -> MeViS-layout training split."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="convert a rosbag2 (camera + commands + masks) into a MeViS-layout training split",
        description="Writes <out>/<split>/{JPEGImages,meta_expressions.json,mask_dict.json,bag_source.json}. "
        "Each run of images with a constant set of referring commands becomes one video. Masks come from a "
        "mono8 image topic or the tracker's TargetResultArray (pseudo-labels), matched to images by stamp.",
    )
    parser.add_argument("bag", type=Path, help="bag folder, or its .db3/.mcap file")
    parser.add_argument("--out", type=Path, required=True, help="dataset root (the split folder goes inside)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="Image or CompressedImage topic")
    parser.add_argument(
        "--command-topic",
        nargs="+",
        metavar="TOPIC",
        help="std_msgs/String and/or glus_ros_msgs ReferringCommand(Array) topics; those missing from the bag are "
        "skipped (default: the tracker's /glus/command /glus/commands)",
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
    from glus_ros.recording.bag_to_dataset import DEFAULT_COMMAND_TOPICS, convert_bag

    summary = convert_bag(
        args.bag,
        args.out,
        image_topic=args.image_topic,
        command_topic=None if args.expression else (args.command_topic or DEFAULT_COMMAND_TOPICS),
        label_topic=args.label_topic,
        every_n=args.every_n,
        split=args.split,
        expression=args.expression,
        stamp_tolerance_s=args.stamp_tolerance,
    )
    print(
        f"wrote {summary.videos} videos, {summary.frames} frames, {summary.expressions} expressions to "
        f"{summary.split_dir} (read {summary.images_read} images; skipped {summary.skipped_no_target} without an "
        f"expression, {summary.skipped_unlabeled} without a label, {summary.skipped_every_n} by --every-n, "
        f"{summary.skipped_undecodable} undecodable)"
    )
    return 0
