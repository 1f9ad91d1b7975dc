"""The ``glus-ros`` console command: one entry point, one sub-command per verb."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# verb -> module under glus_ros.commands exposing add_parser(subparsers) and run(args) -> int
COMMANDS = {
    "segment": "segment",
    "ask": "ask",
    "eval": "eval",
    "synth": "synth",
    "train": "train",
    "camera": "camera",
    "record": "record",
    "convert-bag": "convert_bag",
    "track": "track",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glus-ros", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"glus_ros.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"glus_ros.commands.{module}":
                raise
            continue
        mod.add_parser(sub, verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        # user errors (missing checkpoint, unreadable video, empty expression...): one clear line
        print(f"glus-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
