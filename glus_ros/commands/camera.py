"""``glus-ros camera``: publish a synthetic RGB-D scene, a video file or a frame folder as a ROS camera."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# CLI option -> node parameter (only options given on the command line override a --params-file)
_OPTIONS = {
    "source": "source",
    "rate": "rate_hz",
    "frame_id": "frame_id",
    "image_topic": "image_topic",
    "depth_topic": "depth_topic",
    "info_topic": "info_topic",
    "seed": "synth_seed",
    "index": "synth_index",
    "frames": "synth_frames",
    "width": "synth_width",
    "height": "synth_height",
    "fov": "fov_deg",
    "reliability": "reliability",
    "queue_depth": "queue_depth",
}


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="publish a synthetic scene, video or frame folder as sensor_msgs/Image + CameraInfo (+ depth)",
        description="Runs the camera_source node. Options override the node parameters (see "
        "config/camera_source.yaml); the synthetic scene's referring expressions are logged at start.",
    )
    parser.add_argument("--source", help="'synth' (default), a video file or a folder of frames")
    parser.add_argument("--rate", type=float, help="frames per second (default 30)")
    parser.add_argument("--no-loop", dest="loop", action="store_false", default=None, help="stop at the end")
    parser.add_argument("--frame-id", help="header.frame_id (default camera_color_optical_frame)")
    parser.add_argument("--image-topic", help="default /camera/image_raw")
    parser.add_argument("--depth-topic", help="default /camera/depth/image_raw")
    parser.add_argument("--info-topic", help="default /camera/camera_info")
    parser.add_argument("--no-depth", dest="publish_depth", action="store_false", default=None, help="no depth")
    parser.add_argument("--seed", type=int, help="synthetic scene seed (default 0)")
    parser.add_argument("--index", type=int, help="synthetic scene index for the seed (default 0)")
    parser.add_argument("--frames", type=int, help="synthetic scene length before looping (default 64)")
    parser.add_argument("--width", type=int, help="synthetic image width (default 640)")
    parser.add_argument("--height", type=int, help="synthetic image height (default 480)")
    parser.add_argument("--fov", type=float, help="horizontal field of view for video/folder CameraInfo (default 60)")
    parser.add_argument("--reliability", choices=["reliable", "best_effort"], help="publisher QoS (default reliable)")
    parser.add_argument("--queue-depth", type=int, help="publisher QoS history depth (default 5)")
    parser.add_argument("--params-file", type=Path, help="ROS parameters YAML, e.g. config/camera_source.yaml")
    parser.set_defaults(func=run)


def parameter_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Node parameters from the options the user gave."""
    overrides: dict[str, Any] = {
        param: getattr(args, option) for option, param in _OPTIONS.items() if getattr(args, option) is not None
    }
    for flag in ("loop", "publish_depth"):
        if getattr(args, flag) is not None:
            overrides[flag] = bool(getattr(args, flag))
    return overrides


def run(args: argparse.Namespace) -> int:
    from glus_ros.ros.camera_source import run as run_camera

    argv = [sys.argv[0]]
    if args.params_file is not None:
        if not args.params_file.is_file():
            raise FileNotFoundError(f"--params-file {args.params_file} does not exist")
        argv += ["--ros-args", "--params-file", str(args.params_file)]
    return run_camera(argv, parameter_overrides(args))
