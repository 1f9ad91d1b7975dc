"""``glus-ros synth``: write a synthetic MeViS-layout referring-video split (the project's training data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import write_split


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="generate a synthetic MeViS-like benchmark (look-alike objects told apart by motion)",
        description="Write <out>/<split>/{JPEGImages,meta_expressions.json,mask_dict.json,synth_meta.json}. "
        "The same seed gives byte-identical files; the split name is mixed into the seed.",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset root (the split folder goes inside)")
    parser.add_argument("--videos", type=int, required=True, help="number of videos to generate (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0; default 0)")
    parser.add_argument("--split", default="train", help="split folder name, e.g. train or valid (default train)")
    parser.add_argument(
        "--frames", type=int, default=SynthConfig.frames, help=f"frames per video (>= 8; default {SynthConfig.frames})"
    )
    parser.add_argument("--twins", action="store_true",
                        help="also write, for each expression that tells a look-alike apart, its twin naming the "
                        "look-alike with the same noun and kind of qualifier ('on the left' / 'on the right')")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing split written by synth")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = SynthConfig(frames=args.frames, twins=args.twins)
    split_dir = write_split(args.out, args.split, args.videos, args.seed, config, overwrite=args.overwrite)
    print(f"wrote {args.videos} synthetic videos to {split_dir}")
    return 0
