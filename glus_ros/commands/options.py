"""Command-line options shared by the commands that run a model (segment, ask, eval, track).

One module so that a flag means the same everywhere and no command imports another command's module for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.model.region import Region, parse_region


def add_weights_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, device: bool = True) -> None:
    """Where the weights come from and how they run: checkpoints, the release's CLIP folder, device, precision."""
    parser.add_argument("--checkpoint", help="released GLUS folder or official GLUS/LISA checkpoint to load "
                                             "(--model molmo2: the Molmo2 folder)")
    parser.add_argument("--sam2-checkpoint", help="official SAM 2 .pt checkpoint for the SAM 2 head")
    parser.add_argument("--vision-tower", help="released GLUS weights: local CLIP ViT-L/14 folder "
                                               "(openai/clip-vit-large-patch14 layout; the release has none)")
    parser.add_argument("--adapter", metavar="DIR",
                        help="released GLUS weights: a fine-tuning export (save_adapter: LoRA + trained heads) "
                             "applied to the --checkpoint release (docs/official_weights.md)")
    if device:
        parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16"],
                        help="autocast precision (default fp32); for the released GLUS weights (glus-s, glus-a) "
                             "the weights' precision (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--model-override", help="YAML file merged into the model config (e.g. memory: {stride: 2})")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs the model."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"config name, YAML file or trained model directory (default: {DEFAULT_MODEL}); "
                             "'molmo2' or a Molmo2 folder for the Molmo2 backend (docs/backends.md)")
    add_weights_arguments(parser)


def load_model_from_args(args: argparse.Namespace):
    """The model the options of :func:`add_model_arguments` name; sets ``args.dtype`` to the run precision."""
    from glus_ros.inference import load_model
    from glus_ros.model.config import read_yaml_mapping

    overrides = None
    if args.model_override:
        path = Path(args.model_override)
        if not path.is_file():
            raise FileNotFoundError(f"--model-override {path} does not exist")
        overrides = read_yaml_mapping(path)
    model = load_model(args.model, args.checkpoint, args.sam2_checkpoint, args.device, overrides,
                       args.vision_tower, args.dtype, adapter=args.adapter)
    args.dtype = args.dtype or "fp32"
    return model


def add_region_arguments(parser: argparse.ArgumentParser, repeat: bool) -> None:
    """``--region x0,y0,x1,y1`` (or ``x,y``) pixels, and the frame it is drawn on."""
    parser.add_argument("--region", action="append" if repeat else "store", metavar="X0,Y0,X1,Y1",
                        help="a box x0,y0,x1,y1 (or a point x,y) in pixels of the region frame"
                             + (" (repeat: one per <region> in the question, in order)" if repeat else
                                ": track the object in it ('track this'); instead of --expr"))
    parser.add_argument("--region-frame", type=int, default=None,
                        help="video frame the region is drawn on (default: --start-frame, else 0)")


def regions_from_args(args: argparse.Namespace) -> list[Region]:
    """The parsed regions (none when --region is absent); pixel bounds are checked once the video is read."""
    raw = args.region
    if raw is None:
        return []
    texts = raw if isinstance(raw, list) else [raw]
    frame = args.region_frame if args.region_frame is not None else getattr(args, "start_frame", None) or 0
    if frame < 0:
        raise ValueError(f"--region-frame must be >= 0, got {frame}")
    return [parse_region(t, frame) for t in texts]


def region_or_expression(args: argparse.Namespace) -> tuple[str, Region | None]:
    """``segment``: the cleaned --expr, or ``track <region>`` and the --region ("track this"); exactly one."""
    from glus_ros.model.prompting import clean_expression
    from glus_ros.model.region import TRACK_REGION_QUESTION

    regions = regions_from_args(args)
    if not regions:
        if args.expr is None:
            raise ValueError("give --expr (what to segment) or --region (a box to track)")
        return clean_expression(args.expr), None
    if args.expr is not None:
        raise ValueError("give --expr or --region, not both")
    if getattr(args, "points", False) or getattr(args, "key_frame", False):
        raise ValueError("--region tracks from its own frame: it does not combine with --points or --key-frame")
    return TRACK_REGION_QUESTION, regions[0]


def check_regions_on_video(regions: list[Region], frames: list) -> None:
    """Fail on a region outside the video or its frames before the model loads."""
    from glus_ros.grounding import check_regions

    if regions and frames:
        check_regions(regions, len(frames), int(frames[0].shape[1]), int(frames[0].shape[0]))


