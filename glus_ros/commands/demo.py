"""``glus-ros demo``: the whole ROS pipeline on one machine, no camera and no GPU needed.

A synthetic RGB-D camera node streams a scene, the tracker lifecycle node (default model) is configured and
activated, a referring expression of that scene is sent on ``/glus/command``, and a recorder node collects
``/glus/segmentation`` and ``/glus/debug_image``. Everything travels over ROS topics (shared memory, in one
process). Written to ``--out``: ``overlay.mp4``, ``results.jsonl`` (one line per published result) and
``summary.json`` (frame counts, latency, and mask IoU against the scene's ground truth).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glus_ros.commands.track import (
    add_pipeline_arguments,
    check_param_rules,
    default_camera_params,
    package_config,
    pipeline_overrides,
)

MAX_OVERLAY_FRAMES = 900  # ~800 MB of 640x480 frames at most: a longer run keeps the first ones only


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(verb, help="end-to-end ROS demo on a synthetic camera (no camera, no GPU)")
    parser.add_argument("--frames", type=int, default=90, help="camera frames to stream (default: 90)")
    parser.add_argument("--duration", type=float, help="stream for this many seconds instead of --frames")
    parser.add_argument("--expression", help="referring expression (default: the first one of the synthetic scene)")
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate [Hz] (default: 30)")
    parser.add_argument("--size", default="640x480", help="camera image size WxH (default: 640x480)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic scene seed (default: 0)")
    add_pipeline_arguments(parser, default_camera="synth")
    parser.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if width < 32 or height < 32:
        raise ValueError(f"--size {text!r}: at least 32x32")
    return width, height


@dataclass
class Recorder:
    """Receives the tracker's outputs (and the camera's CameraInfo, to number frames) over ROS."""

    node: Any
    results: list[Any] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    overlays: list[np.ndarray] = field(default_factory=list)
    frame_index: dict[tuple[int, int], int] = field(default_factory=dict)

    @classmethod
    def create(cls, context: Any, info_topic: str) -> Recorder:
        import rclpy
        from glus_ros_msgs.msg import TargetResultArray
        from sensor_msgs.msg import CameraInfo, Image

        from glus_ros.ros.qos import qos_profile

        recorder = cls(rclpy.create_node("glus_demo_recorder", context=context))
        reliable = qos_profile("reliable", 100)
        recorder.node.create_subscription(TargetResultArray, "/glus/segmentation", recorder._on_result, reliable)
        recorder.node.create_subscription(Image, "/glus/debug_image", recorder._on_overlay, reliable)
        recorder.node.create_subscription(CameraInfo, info_topic, recorder._on_info, reliable)
        return recorder

    @staticmethod
    def _key(header: Any) -> tuple[int, int]:
        return header.stamp.sec, header.stamp.nanosec

    def _on_info(self, msg: Any) -> None:
        self.frame_index[self._key(msg.header)] = len(self.frame_index)

    def _on_result(self, msg: Any) -> None:
        self.results.append(msg)
        self.received_at.append(time.time())

    def _on_overlay(self, msg: Any) -> None:
        from glus_ros.ros.image_conversion import image_to_rgb

        if len(self.overlays) < MAX_OVERLAY_FRAMES:
            self.overlays.append(image_to_rgb(msg))


def _target_record(result: Any, truth: np.ndarray | None) -> dict[str, Any]:
    from glus_ros.ros.image_conversion import mask_from_image

    record: dict[str, Any] = {
        "target_id": result.target_id, "state": ("grounding", "tracking", "lost")[result.state],
        "score": round(float(result.score), 4),
        "bbox": None if result.bbox.x_max < result.bbox.x_min else
        [result.bbox.x_min, result.bbox.y_min, result.bbox.x_max, result.bbox.y_max],
        "point": [round(result.points_2d[0].x, 2), round(result.points_2d[0].y, 2)] if result.points_2d else None,
        "point_3d": [round(v, 4) for v in (result.point_3d.x, result.point_3d.y, result.point_3d.z)]
        if result.has_point_3d else None,
    }
    if truth is not None and result.mask.width > 0:
        mask = mask_from_image(result.mask)
        union = np.logical_or(mask, truth).sum()
        record["iou"] = round(float(np.logical_and(mask, truth).sum() / union), 4) if union else 1.0
    return record


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 2), "p50": round(float(np.percentile(arr, 50)), 2),
            "p95": round(float(np.percentile(arr, 95)), 2), "max": round(float(arr.max()), 2)}


@dataclass
class DemoRun:
    """What streaming produced: the recorder's messages and the counts needed for the summary."""

    recorder: Recorder
    scene: Any              # the camera's SyntheticCamera (expressions, ground truth)
    expression: str
    truth_index: int | None  # index of the expression in the scene, for ground-truth IoU
    stats: dict[str, int]
    frames_published: int
    streamed_s: float
    model: str
    schedule: str


def run(args: argparse.Namespace) -> int:
    from glus_ros.model.prompting import clean_expression
    from glus_ros.ros_env import apply_ros_environment

    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    if not 0 < args.rate <= 1000:
        raise ValueError(f"--rate must be in (0, 1000] Hz, got {args.rate}")
    if args.camera != "synth":
        raise ValueError("the demo streams the synthetic scene (--camera synth); use `glus-ros track` for others")
    size = _size(args.size)
    check_param_rules(args.param)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    expression = clean_expression(args.expression) if args.expression else None
    params = Path(args.params) if args.params else package_config("tracker.yaml")
    apply_ros_environment(force=True)  # a demo is all local: shared memory only, whatever the user's DDS setup
    demo = _stream(args, params, size, expression)
    _write_outputs(demo, args, size, out)
    return 0


def _stream(args: argparse.Namespace, params: Path, size: tuple[int, int], expression: str | None) -> DemoRun:
    """Tracker + camera + recorder in one process: set the target, stream, wait for the last results."""
    from std_msgs.msg import String

    from glus_ros.commands.track import start_pipeline
    from glus_ros.ros.qos import qos_profile

    camera_params = Path(args.camera_params) if args.camera_params else default_camera_params()
    overrides = {"use_depth": True, "publish_debug_image": True, **pipeline_overrides(args)}
    print(f"demo: starting the tracker ({overrides.get('model') or 'model from ' + str(params)})", flush=True)
    pipeline = start_pipeline(params, args.param, overrides)
    try:
        tracker = pipeline.tracker
        recorder = Recorder.create(pipeline.context, tracker.get_parameter("camera_info_topic").value)
        pipeline.executor.add_node(recorder.node)
        camera_overrides = {"synth_width": size[0], "synth_height": size[1], "rate_hz": float(args.rate),
                            "synth_seed": args.seed, "loop": True}
        camera = pipeline.add_camera("synth", camera_params, camera_overrides)
        camera.timer.cancel()  # start streaming only once the target is set and everyone is connected
        scene = camera.source
        expression = expression or scene.expressions[0]
        command = recorder.node.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
        ok = _wait(pipeline, lambda: command.get_subscription_count() > 0
                   and tracker.output_subscribers()["segmentation"] > 0 and tracker.output_subscribers()["debug"] > 0
                   and camera.image_pub.get_subscription_count() > 0, 10.0)
        if not ok:
            raise ValueError("the demo nodes did not discover each other within 10 s (DDS shared memory setup?)")
        command.publish(String(data=expression))
        if not _wait(pipeline, lambda: bool(tracker.engine.targets()), 10.0):
            raise ValueError(f"the tracker did not take the command {expression!r}: {tracker.last_input_error}")
        print(f"demo: tracking {expression!r} in {scene.description}", flush=True)

        camera.timer.reset()
        started = time.monotonic()
        next_print = started + 1.0
        goal = f"{args.duration:g} s" if args.duration else f"{args.frames} frames"
        while pipeline.context.ok():
            elapsed = time.monotonic() - started
            done = elapsed >= args.duration if args.duration else camera.frames_published >= args.frames
            if done:
                break
            pipeline.executor.spin_once(timeout_sec=0.02)
            if time.monotonic() >= next_print:
                next_print += 1.0
                print(f"demo: [{elapsed:4.1f} s / {goal}] " + _progress(camera, tracker, recorder), flush=True)
        camera.timer.cancel()
        streamed_s = time.monotonic() - started
        # the last frames in flight: images on their way to the tracker, its pending frame, results on their way
        pipeline.spin_for(0.3)
        _wait(pipeline, lambda: _settled(tracker, recorder), 10.0)
        return DemoRun(
            recorder=recorder, scene=scene, expression=expression,
            truth_index=scene.expressions.index(expression) if expression in scene.expressions else None,
            stats=dict(tracker.engine.stats), frames_published=camera.frames_published, streamed_s=streamed_s,
            model=tracker.get_parameter("model").value, schedule=tracker.get_parameter("schedule").value,
        )
    finally:
        pipeline.close()


def _write_outputs(demo: DemoRun, args: argparse.Namespace, size: tuple[int, int], out: Path) -> None:
    """results.jsonl (one line per result), overlay.mp4 (the debug images) and summary.json."""
    recorder, scene, stats = demo.recorder, demo.scene, demo.stats
    out.mkdir(parents=True, exist_ok=True)
    lines, latencies, ious = [], [], []
    for msg, received in zip(recorder.results, recorder.received_at, strict=True):
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        index = recorder.frame_index.get(Recorder._key(msg.header))
        truth = None
        if demo.truth_index is not None and index is not None:
            truth = scene.expression_mask(demo.truth_index, index % len(scene))
        targets = [_target_record(r, truth) for r in msg.results]
        ious += [t["iou"] for t in targets if "iou" in t]
        latencies.append(float(msg.latency_ms))
        lines.append(json.dumps({
            "stamp": round(stamp, 9), "seq": index, "latency_ms": round(float(msg.latency_ms), 2),
            "receipt_latency_ms": round((received - stamp) * 1000.0, 2), "frames_dropped": int(msg.frames_dropped),
            "targets": targets,
        }))
    (out / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    video = None
    if recorder.overlays:
        from glus_ros.video_io import write_video

        fps = max(1.0, len(recorder.overlays) / max(demo.streamed_s, 1e-3))  # plays back in real time
        video = write_video(out / "overlay.mp4", recorder.overlays, fps)
    summary = {
        "model": demo.model, "schedule": demo.schedule, "expression": demo.expression, "scene": scene.description,
        "camera": {"size": list(size), "rate_hz": args.rate, "frames_published": demo.frames_published},
        "frames_in": stats["frames_in"], "frames_processed": stats["frames_processed"],
        "frames_dropped": stats["frames_dropped"], "errors": stats["errors"], "results": len(lines),
        "drop_fraction": round(stats["frames_dropped"] / stats["frames_in"], 4) if stats["frames_in"] else None,
        "streamed_s": round(demo.streamed_s, 3),
        "processed_fps": round(stats["frames_processed"] / demo.streamed_s, 2) if demo.streamed_s > 0 else None,
        "latency_ms": _percentiles(latencies),
        "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
        "overlay": str(video) if video else None, "overlay_frames": len(recorder.overlays),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lat = summary["latency_ms"]
    print(f"demo: {demo.frames_published} frames streamed, {stats['frames_processed']} processed, "
          f"{stats['frames_dropped']} dropped; latency mean {lat['mean']} ms, p95 {lat['p95']} ms; "
          f"mean IoU {summary['mean_iou']} against the scene's ground truth")
    print(f"demo: wrote {out / 'summary.json'}, {out / 'results.jsonl'}" + (f", {video}" if video else ""))


def _wait(pipeline: Any, done: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and pipeline.context.ok():
        pipeline.executor.spin_once(timeout_sec=0.02)
    return bool(done())


def _settled(tracker: Any, recorder: Recorder) -> bool:
    stats = tracker.engine.stats
    engine_done = stats["frames_processed"] + stats["frames_dropped"] + stats["errors"] >= stats["frames_in"]
    published = tracker.results_published >= stats["frames_processed"]  # the worker publishes after counting
    return (engine_done and published and len(recorder.results) >= tracker.results_published
            and len(recorder.overlays) >= min(tracker.debug_images_published, MAX_OVERLAY_FRAMES))


def _progress(camera: Any, tracker: Any, recorder: Recorder) -> str:
    stats = tracker.engine.stats
    text = (f"camera {camera.frames_published} frames | tracker in {stats['frames_in']}, processed "
            f"{stats['frames_processed']}, dropped {stats['frames_dropped']}")
    if recorder.results:
        last = recorder.results[-1]
        text += f" | latency {last.latency_ms:.0f} ms"
        if last.results:
            r = last.results[0]
            text += f" | {r.target_id} {('grounding', 'tracking', 'lost')[r.state]} {r.score:.2f}"
    return text
