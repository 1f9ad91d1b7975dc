"""``glus-ros segment``: masks for every frame of a video from a referring expression."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm import tqdm

from glus_ros.commands.options import (
    add_model_arguments,
    add_region_arguments,
    check_regions_on_video,
    load_model_from_args,
    region_or_expression,
)

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(verb, help="segment the referred object in every frame of a video")
    parser.add_argument("--video", required=True, help="video file (.mp4, ...) or folder of frames")
    parser.add_argument("--expr", help='referring expression, e.g. "the red mug" (or --region)')
    parser.add_argument("--out", required=True, help="output folder: <frame>.png masks, overlay video, result.json")
    add_model_arguments(parser)
    parser.add_argument("--start-frame", type=int, default=0,
                        help="frame to start from; the model propagates forward, then backward from it")
    parser.add_argument("--key-frame", action="store_true",
                        help="let the model's key-frame selector choose the start frame (overrides --start-frame)")
    parser.add_argument("--points", action="store_true",
                        help="answer with points and build the masks from them with SAM 2 point prompts "
                             "propagated both ways (VideoMolmo); writes points.json")
    parser.add_argument("--point-source", choices=["auto", "head", "mask"], default="auto",
                        help="--points: the model's point head, one point per component of its [SEG] mask, "
                             "or auto (the head when the model has one)")
    parser.add_argument("--anchors", default="key",
                        help="--points: 'key' (the most confident frame) or a stride K (points every K frames); "
                             "a pointing backend (Molmo2): 'key' (the frame with most points), 'all' (every "
                             "frame it pointed at) or K (those frames, at least K apart)")
    parser.add_argument("--tracker", metavar="DIR",
                        help="a pointing backend (Molmo2): the point tracker, a local SAM 3 tracker or EdgeTAM "
                             "folder (its config.json model_type decides), instead of SAM 2 from --sam2-checkpoint")
    parser.add_argument("--max-frames", type=int, help="only the first N frames")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    add_region_arguments(parser, repeat=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glus_ros.core.loop import VideoSegmentation
    from glus_ros.inference import VideoSegmenter
    from glus_ros.video_io import read_video

    expression, region = region_or_expression(args)  # fail before loading anything
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    frames, names, fps = read_video(args.video, args.max_frames)
    if not 0 <= args.start_frame < len(frames):
        raise ValueError(f"--start-frame {args.start_frame} outside the video's {len(frames)} frames")
    check_regions_on_video([region] if region is not None else [], frames)
    from glus_ros.backends.loading import backend_of

    backend_name = backend_of(args.model)
    if args.tracker is not None and backend_name != "molmo2":
        raise ValueError(f"--tracker chooses a pointing backend's point tracker (Molmo2); the {backend_name} "
                         "model makes its own masks")
    if backend_name == "sam3":  # a concept backend: every instance, each with its own masks
        from glus_ros.commands.segment_instances import run_concept_backend

        return run_concept_backend(args, expression, region, frames, names, fps, out, _write_outputs)
    if backend_name != "glus":  # a pointing backend (Molmo2): points -> SAM 2 masks
        return _run_pointing_backend(args, expression, region, frames, names, fps, out)
    model = load_model_from_args(args)
    if model.cfg.official is not None and region is None:
        expression = args.expr  # the released weights' prompt takes the expression as given (spacing kept)
    if args.points and args.point_source == "head" and model.point_head is None:
        raise ValueError(f"--point-source head: model {args.model} has no point head")
    if args.key_frame and model.key_frame is None:
        raise ValueError(f"--key-frame: model {args.model} has no trained key-frame selector")
    segmenter = VideoSegmenter(model, dtype=args.dtype)
    points_json = None
    if args.points:
        import time

        from glus_ros.points.predictor import PointPredictor

        anchors = "key" if args.anchors == "key" else _stride(args.anchors)
        t0 = time.perf_counter()
        pointed, predicted = PointPredictor(model, args.dtype, args.point_source).segment(frames, expression, anchors)
        took = time.perf_counter() - t0
        result = VideoSegmentation(pointed.masks, pointed.scores, min(pointed.anchors, default=0),
                                   {"total_s": took, "per_frame_s": took / len(frames)})
        points_json = {name: [[round(x, 5), round(y, 5)] for x, y in pts]
                       for name, pts in zip(names, predicted.points, strict=True)}
    else:
        with tqdm(total=len(frames), desc="segment", unit="frame") as bar:
            if region is not None:  # "track this": the box replaces the <region> of "track <region>"
                from glus_ros.grounding import GroundedSegmenter

                result = GroundedSegmenter(model, args.dtype).segment_region(frames, region.frame, region, bar.update)
            else:
                result = segmenter.segment(frames, expression, start_frame=args.start_frame, progress=bar.update,
                                           key_frame=args.key_frame)
    _write_outputs(args, expression, region, frames, names, fps, out, result, points_json)
    return 0


def _write_outputs(args: argparse.Namespace, expression: str, region, frames, names, fps: float, out: Path,
                   result, points_json: dict | None, extra: dict | None = None) -> None:
    """PNG masks, the overlay video, result.json and points.json (the same for every backend)."""
    from glus_ros.video_io import overlay, write_mask_png, write_video

    out.mkdir(parents=True, exist_ok=True)
    for name, mask in zip(names, result.masks, strict=True):
        write_mask_png(out / f"{name}.png", mask)
    video_path = None
    if not args.no_overlay:
        overlays = [overlay(f, m) for f, m in zip(frames, result.masks, strict=True)]
        video_path = write_video(out / "overlay.mp4", overlays, fps)
    summary = {
        "video": str(args.video), "expression": expression, "model": str(args.model),
        "region": None if region is None else region.to_json(),
        "frames": len(frames), "start_frame": result.start_frame,
        "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
        "scores": [round(float(s), 4) for s in result.scores],
        "key_frame_scores": None if result.key_frame_scores is None
        else [round(float(s), 4) for s in result.key_frame_scores],
        "timings": result.timings, "overlay": str(video_path) if video_path else None,
        **(extra or {}),
    }
    (out / "result.json").write_text(json.dumps(summary, indent=1))
    if points_json is not None:
        (out / "points.json").write_text(json.dumps({"normalised_xy": points_json}, indent=1))
    print(f"wrote {len(frames)} masks to {out} ({result.timings['per_frame_s'] * 1000:.0f} ms/frame)"
          + (f", overlay {video_path}" if video_path else ""))


def _run_pointing_backend(args: argparse.Namespace, expression: str, region, frames, names, fps: float,
                          out: Path) -> int:
    """``segment`` with a backend that answers with points (Molmo2): points -> SAM 2 masks both ways."""
    import time

    from glus_ros.backends.loading import load_backend
    from glus_ros.backends.video import BackendPointPredictor
    from glus_ros.core.loop import VideoSegmentation

    unsupported = [flag for flag, used in (("--region", region is not None), ("--key-frame", args.key_frame),
                                           ("--start-frame", args.start_frame != 0),
                                           ("--point-source", args.point_source != "auto"),
                                           ("--vision-tower", args.vision_tower is not None),
                                           ("--adapter", args.adapter is not None),
                                           ("--model-override", args.model_override is not None)) if used]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not available with the {args.model} model (a pointing "
                         "backend: it chooses the frames it points at)")
    if not args.points:
        raise ValueError(f"model {args.model} answers with points: add --points (its masks are SAM 2's, "
                         "prompted by those points and propagated both ways)")
    anchors: str | int = args.anchors if args.anchors in ("key", "all") else _stride(args.anchors)
    args.dtype = args.dtype or "fp32"
    overrides = {"molmo2": {"tracker": str(args.tracker)}} if args.tracker is not None else None
    backend = load_backend(args.model, args.checkpoint, args.sam2_checkpoint, args.device, args.dtype, overrides)
    predictor = BackendPointPredictor(backend, args.dtype, fps)
    t0 = time.perf_counter()
    pointed, predicted = predictor.segment(frames, expression, anchors)
    took = time.perf_counter() - t0
    result = VideoSegmentation(pointed.masks, pointed.scores, min(pointed.anchors, default=0),
                               {"total_s": took, "per_frame_s": took / len(frames)})
    grounding = predictor.last_grounding
    points_json = {name: [[round(x, 5), round(y, 5)] for x, y in pts]
                   for name, pts in zip(names, predicted.points, strict=True)}
    extra = {"backend": backend.name, "anchors": pointed.anchors,
             "answer": None if grounding is None else grounding.text,
             "count": None if grounding is None else grounding.count,
             "malformed_answer": bool(grounding is not None and grounding.malformed)}
    if grounding is not None and grounding.malformed:
        print(f"warning: the model's answer has no readable points; the target is lost on every frame: "
              f"{(grounding.text or '')[:120]!r}")
    _write_outputs(args, expression, region, frames, names, fps, out, result, points_json, extra)
    return 0


def _stride(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--anchors must be 'key' or a frame stride >= 1, got {text!r}")
    return value
