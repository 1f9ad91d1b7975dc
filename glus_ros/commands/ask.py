"""``glus-ros ask``: a grounded answer about a video: the text, and a mask track per phrase it grounds."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from glus_ros.commands.options import (
    add_model_arguments,
    add_region_arguments,
    check_regions_on_video,
    load_model_from_args,
    regions_from_args,
)
from glus_ros.model.region import REGION_TOKEN

_TARGET_DIR = re.compile(r"^[A-Za-z0-9_]+$")


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(verb, help="answer a question about a video with phrases grounded to masks")
    parser.add_argument("--video", required=True, help="video file (.mp4, ...) or folder of frames")
    parser.add_argument("--question", required=True,
                        help=f'question, e.g. "what is the robot holding?"; {REGION_TOKEN} stands for a --region')
    parser.add_argument("--out", required=True,
                        help="output folder: answer.json and <target_id>/<frame>.png masks per grounded phrase")
    add_model_arguments(parser)
    add_region_arguments(parser, repeat=True)
    parser.add_argument("--answer", help="ground this marked answer instead of generating one, e.g. "
                                         '"<p>the cup</p> [SEG] left of <p>the spoon</p> [SEG]"')
    parser.add_argument("--start-frame", type=int, default=None,
                        help="frame whose window the answer is generated on (default: the region frame, else 0)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (tokens)")
    parser.add_argument("--refresh-prompts", action="store_true",
                        help="re-read every phrase's [SEG] on each query window (slower, as in training)")
    parser.add_argument("--max-frames", type=int, help="only the first N frames")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glus_ros.grounding import GroundedSegmenter
    from glus_ros.model.prompting import clean_question
    from glus_ros.video_io import read_video, write_mask_png

    question = clean_question(args.question)  # fail before loading anything
    regions = regions_from_args(args)
    if question.count(REGION_TOKEN) != len(regions):
        raise ValueError(f"the question holds {question.count(REGION_TOKEN)} {REGION_TOKEN} tokens but "
                         f"{len(regions)} --region were given (one each, in order)")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    frames, names, _fps = read_video(args.video, args.max_frames)
    if args.start_frame is not None and not 0 <= args.start_frame < len(frames):
        raise ValueError(f"--start-frame {args.start_frame} outside the video's {len(frames)} frames")
    check_regions_on_video(regions, frames)
    model = load_model_from_args(args)
    result = GroundedSegmenter(model, dtype=args.dtype).answer(
        frames, question, regions, answer_text=args.answer, start_frame=args.start_frame,
        max_new_tokens=args.max_new_tokens, refresh_prompts=args.refresh_prompts)
    out.mkdir(parents=True, exist_ok=True)
    for phrase in result.phrases:
        if not _TARGET_DIR.match(phrase.target_id):  # target ids name folders
            raise ValueError(f"unexpected target id {phrase.target_id!r}")
        for name, mask in zip(names, phrase.masks, strict=True):
            write_mask_png(out / phrase.target_id / f"{name}.png", mask)
    summary = {"video": str(args.video), "question": question, "model": str(args.model), "frames": len(frames),
               "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
               "regions": [r.to_json() for r in regions], **result.to_json()}
    (out / "answer.json").write_text(json.dumps(summary, indent=1))
    print(result.text)
    for phrase in result.phrases:
        print(f"  {phrase.target_id}: {phrase.text!r} -> {out / phrase.target_id}/")
    return 0
