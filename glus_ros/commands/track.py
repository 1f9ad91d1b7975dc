"""``glus-ros track``: the tracker node (and optionally a camera) in this one process, configured and active.

What ``ros2 launch glus_ros track.launch.py`` does, without needing the launch system: the same nodes, the
same parameter files, the same auto configure + activate. The in-process composition here is shared
with ``glus-ros demo`` and the latency benchmark.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glus_ros.model.config import DEFAULT_MODEL

PACKAGE = "glus_ros"
_PARAM_RULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:=.*$")


def package_config(name: str) -> Path:
    """A file of the package's ``config/``: the source tree first, then the installed share directory."""
    candidates = [Path(__file__).resolve().parent.parent.parent / "config" / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / name)
    except (ImportError, LookupError, OSError):  # not installed as a ROS package / no AMENT_PREFIX_PATH
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "config" / name)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"{PACKAGE} config file {name} not found (tried {tried})")


def check_param_rules(rules: Sequence[str]) -> list[str]:
    """``-p name:=value`` overrides as ROS arguments; a malformed rule is a clear error, not an RCL parse error."""
    args: list[str] = []
    for rule in rules:
        if not _PARAM_RULE.match(rule):
            raise ValueError(f"-p {rule!r}: expected NAME:=VALUE, e.g. -p schedule:=full")
        args += ["-p", rule]
    return args


@dataclass
class Pipeline:
    """Nodes of one in-process run: the tracker, the camera (or None) and their executor and context."""

    context: Any
    executor: Any
    tracker: Any
    camera: Any | None = None

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.context.ok() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def add_camera(self, source: str, params: Path | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """Start a CameraSourceNode publishing where the tracker listens; a bad source raises ValueError.

        Started after the tracker is active, so that the camera's first frame is one the tracker can see.
        """
        from rclpy.parameter import Parameter

        from glus_ros.ros.camera_source import CameraSourceNode

        values = {
            "source": source,
            "image_topic": self.tracker.get_parameter("image_topic").value,
            "depth_topic": self.tracker.get_parameter("depth_topic").value,
            "info_topic": self.tracker.get_parameter("camera_info_topic").value,
            **(overrides or {}),
        }
        cli = ["--ros-args", "--params-file", str(params)] if params is not None else None
        self.camera = CameraSourceNode(context=self.context, cli_args=cli,
                                       parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.executor.add_node(self.camera)
        return self.camera

    def close(self) -> None:
        """Shut the tracker down (frees the model), destroy the nodes and the context."""
        import rclpy

        try:
            if self.tracker.lifecycle_state in ("unconfigured", "inactive", "active"):
                self.tracker.trigger_shutdown()
        finally:
            for node in (self.camera, self.tracker):
                if node is not None:
                    node.destroy_node()
            self.executor.shutdown(timeout_sec=1.0)
            rclpy.try_shutdown(context=self.context)


def start_pipeline(
    params: Path,
    param_rules: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
    camera: str = "none",
    camera_params: Path | None = None,
    camera_overrides: dict[str, Any] | None = None,
) -> Pipeline:
    """Start rclpy in a fresh context, create, configure and activate the tracker, then start the camera.

    Parameter precedence for the tracker: ``overrides`` > ``param_rules`` (-p) > ``params`` file. The camera
    publishes on the tracker's topics. Raises ValueError with the node's reason if a transition fails.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.exceptions import ParameterException
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from glus_ros.ros.tracker_node import TrackerNode

    if not Path(params).is_file():
        raise FileNotFoundError(f"parameter file {params} does not exist")
    cli = ["--ros-args", "--params-file", str(params), *check_param_rules(param_rules)]
    context = Context()
    rclpy.init(context=context, args=[])  # not sys.argv: our own options are no ROS arguments
    pipeline: Pipeline | None = None
    try:
        try:
            tracker = TrackerNode(context=context, cli_args=cli,
                                  parameter_overrides=[Parameter(k, value=v) for k, v in (overrides or {}).items()])
        except ParameterException as exc:
            raise ValueError(f"tracker parameters: {exc}") from None
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(tracker)
        pipeline = Pipeline(context, executor, tracker)
        if tracker.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ValueError(f"the tracker could not be configured: {tracker.last_error or 'see the log above'}")
        if tracker.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ValueError(f"the tracker could not be activated: {tracker.last_error or 'see the log above'}")
        if camera != "none":
            pipeline.add_camera(camera, camera_params, camera_overrides)
        return pipeline
    except BaseException:
        if pipeline is not None:
            pipeline.close()
        else:
            rclpy.try_shutdown(context=context)
        raise


def default_camera_params() -> Path | None:
    try:
        return package_config("camera_source.yaml")
    except FileNotFoundError:
        return None


def add_pipeline_arguments(parser: argparse.ArgumentParser, default_camera: str) -> None:
    """Options shared by track and demo."""
    parser.add_argument("--params", help="tracker parameter file (default: the package's config/tracker.yaml)")
    parser.add_argument("--model",
                        help=f"model config, YAML, trained directory or a Molmo2 folder (default: the params file's, "
                             f"{DEFAULT_MODEL})")
    parser.add_argument("--checkpoint",
                        help="official GLUS/LISA checkpoint folder for --model (default: params file, none)")
    parser.add_argument("--sam2-checkpoint",
                        help="official SAM 2 .pt: the SAM 2 head (needed by a pointing backend such as Molmo2)")
    parser.add_argument("--vision-tower", help="released GLUS weights: local CLIP ViT-L/14 folder")
    parser.add_argument("--adapter", help="released GLUS weights: fine-tuning export applied to the release")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help="precision (default: params file)")
    parser.add_argument("--model-override", help="YAML file merged into the model config (as segment's)")
    parser.add_argument("--schedule", choices=["live", "fast", "full"],
                        help="streaming schedule (default: params file)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: params file)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="override one tracker parameter (repeatable), e.g. -p reground_every:=4")
    parser.add_argument("--camera", default=default_camera,
                        help=f"'synth', a video file or frame folder, or 'none' (default: {default_camera})")
    parser.add_argument("--camera-params", help="camera_source parameter file (default: the package's, if any)")


def pipeline_overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = (("model", args.model), ("checkpoint", args.checkpoint), ("sam2_checkpoint", args.sam2_checkpoint),
             ("vision_tower", args.vision_tower), ("adapter", args.adapter), ("dtype", args.dtype),
             ("model_override", args.model_override),
             ("schedule", args.schedule),
             ("device", args.device))
    return {k: v for k, v in pairs if v}


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(verb, help="run the tracker node (and a camera) in this process until Ctrl-C")
    add_pipeline_arguments(parser, default_camera="none")
    parser.add_argument("--expression", help="start tracking this expression right away (as target_0)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.set_defaults(func=run)


def _status(pipeline: Pipeline, started: float) -> str:
    stats = pipeline.tracker.engine.stats if pipeline.tracker.engine is not None else {}
    line = (f"[{time.monotonic() - started:5.1f} s] frames in {stats.get('frames_in', 0)}, processed "
            f"{stats.get('frames_processed', 0)}, dropped {stats.get('frames_dropped', 0)}, "
            f"results published {pipeline.tracker.results_published}")
    if pipeline.tracker.engine is not None:
        states = ", ".join(f"{s.target_id}: {state}" for s, state in pipeline.tracker.engine.targets())
        line += f"; {states or 'no targets'}"
    return line


def run(args: argparse.Namespace) -> int:
    from glus_ros.model.prompting import clean_expression
    from glus_ros.ros_env import apply_ros_environment

    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    check_param_rules(args.param)  # fail before starting anything
    if args.expression is not None:
        clean_expression(args.expression)
    params = Path(args.params) if args.params else package_config("tracker.yaml")
    camera_params = Path(args.camera_params) if args.camera_params else default_camera_params()
    apply_ros_environment()  # before rclpy starts: the user's DDS profile wins, else shared memory only
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends the run like Ctrl-C: cleanly, status 0
    try:
        return _track(args, params, camera_params)
    except KeyboardInterrupt:  # during start-up or shutdown: what was started is closed already
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _track(args: argparse.Namespace, params: Path, camera_params: Path | None) -> int:
    from rclpy.executors import ExternalShutdownException

    pipeline = start_pipeline(params, args.param, pipeline_overrides(args), args.camera, camera_params)
    try:
        if args.expression:
            pipeline.tracker.apply_text_command(args.expression)  # also latched on /glus/targets (bags keep it)
        topic = pipeline.tracker.get_parameter("image_topic").value
        print(f"tracking on {topic} -> /glus/segmentation, /glus/mask, /glus/target_point(s), /glus/detections, "
              "/glus/debug_image, /glus/markers, /diagnostics; "
              "targets: /glus/command, /tracker/set_targets (set: /glus/targets)"
              + ("" if args.duration else "; Ctrl-C to stop"), flush=True)
        started = time.monotonic()
        next_status = started + 2.0
        deadline = started + args.duration if args.duration else None
        try:
            while pipeline.context.ok() and (deadline is None or time.monotonic() < deadline):
                if pipeline.camera is not None and pipeline.camera.finished:
                    pipeline.spin_for(1.0)  # let the last frame through
                    break
                pipeline.executor.spin_once(timeout_sec=0.1)
                if time.monotonic() >= next_status:
                    print(_status(pipeline, started), flush=True)
                    next_status += 2.0
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        print(_status(pipeline, started), flush=True)
    finally:
        pipeline.close()
    return 0
