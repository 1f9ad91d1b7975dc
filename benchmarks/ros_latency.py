"""End-to-end ROS latency of the tracker: camera image stamp -> result received by a subscriber.

Three processes, as on a robot: ``camera_source`` (synthetic 640x480 RGB at 30 Hz), ``tracker_node``
(lifecycle node, default model), and this one, which configures and activates the tracker through its
lifecycle services, sends a referring command, and records ``/glus/segmentation`` and the camera's
CameraInfo (to count frames). Prints mean/p50/p95 latency and the fraction of camera frames without a
result, per schedule. Shared-memory DDS in a private domain; asserts nothing.

    .venv/bin/python benchmarks/ros_latency.py [--schedules full fast] [--duration 15] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.ros_env import apply_ros_environment, ros_environment

REPO = Path(__file__).resolve().parent.parent


def spawn_node(module: str, ros_args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m module --ros-args ...`` as a child process, its stderr (the ROS log) in ``log``."""
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def spin_until(executor: Any, done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
    return bool(done())


@contextlib.contextmanager
def camera_tracker_client(args: argparse.Namespace, size: str, env: dict[str, str], log_dir: Path, tag: str,
                          tracker_args: list[str], camera_args: list[str],
                          ) -> Iterator[tuple[Any, Any, tuple[subprocess.Popen, subprocess.Popen]]]:
    """Start ``tracker_node`` (config/tracker.yaml, ``args.model`` on ``args.device``, then ``tracker_args``) and
    ``camera_source`` (``camera_args``, then the synthetic scene at ``size`` = "WxH" and ``args.rate``), and a
    client node of this process; yields (node, executor, (tracker, camera)) and stops them all afterwards."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    width, height = (int(v) for v in size.split("x"))
    tracker = spawn_node("glus_ros.ros.tracker_node", [
        "--params-file", str(REPO / "config" / "tracker.yaml"), "-p", f"model:={args.model}",
        "-p", f"device:={args.device}", *tracker_args,
    ], env, log_dir / f"tracker_{tag}.log")
    camera = spawn_node("glus_ros.ros.camera_source", [  # the last value of a parameter wins
        *camera_args, "-p", f"rate_hz:={args.rate}", "-p", f"synth_width:={width}", "-p", f"synth_height:={height}",
    ], env, log_dir / f"camera_{tag}.log")
    context = Context()
    rclpy.init(context=context, args=[])
    node = rclpy.create_node(f"glus_benchmark_client_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor, (tracker, camera)
    finally:
        node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown(context=context)
        stop_process(camera)
        stop_process(tracker)


def bring_up(node: Any, executor: Any, results_arrived: Callable[[], bool], log_dir: Path) -> None:
    """What the launch file does to /tracker (configure, then activate), then the synthetic scene's first
    expression on /glus/command; returns once ``results_arrived()`` (RuntimeError naming the logs if not)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from std_msgs.msg import String

    from glus_ros.ros.camera_source import SyntheticCamera
    from glus_ros.ros.qos import qos_profile

    client = node.create_client(ChangeState, "/tracker/change_state")
    if not spin_until(executor, client.service_is_ready, 60.0):
        raise RuntimeError(f"tracker did not start; see the logs in {log_dir}")
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
        if not spin_until(executor, future.done, 120.0) or not future.result().success:
            raise RuntimeError(f"tracker transition {transition} failed; see the logs in {log_dir}")
    command = node.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
    spin_until(executor, lambda: command.get_subscription_count() > 0, 30.0)
    command.publish(String(data=SyntheticCamera(0, 0, 64, 64, 48).expressions[0]))
    if not spin_until(executor, results_arrived, 60.0):
        raise RuntimeError(f"no results from the tracker; see the logs in {log_dir}")


def private_ros_environment(name: str) -> tuple[dict[str, str], Path]:
    """(environment for the child nodes, their log folder) for this run: shared-memory DDS on localhost (also
    for this process) in a domain of its own, so that parallel runs never see each other's topics."""
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}_{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ROS_DOMAIN_ID"] = str(150 + os.getpid() % 80)
    apply_ros_environment(force=True, log_dir=str(log_dir))
    env = ros_environment(log_dir=str(log_dir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env, log_dir


def run_schedule(args: argparse.Namespace, schedule: str, env: dict[str, str], log_dir: Path) -> dict:
    from glus_ros_msgs.msg import TargetResultArray
    from sensor_msgs.msg import CameraInfo

    from glus_ros.ros.qos import qos_profile

    pipeline = camera_tracker_client(
        args, args.size, env, log_dir, schedule,
        tracker_args=["-p", f"schedule:={schedule}", "-p", "publish_debug_image:=false"],
        camera_args=["-p", "publish_depth:=false"])
    with pipeline as (node, executor, _):
        receipts: list[tuple[float, float, int]] = []  # (stamp, received, frames_dropped)
        frames: list[float] = []

        def on_result(msg: TargetResultArray) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            receipts.append((stamp, time.time(), msg.frames_dropped))

        node.create_subscription(TargetResultArray, "/glus/segmentation", on_result, qos_profile("reliable", 50))
        node.create_subscription(CameraInfo, "/camera/camera_info",
                                 lambda m: frames.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9),
                                 qos_profile("best_effort", 50))
        bring_up(node, executor, lambda: len(receipts) > 0, log_dir)
        spin_until(executor, lambda: False, args.warmup)
        receipts.clear()
        frames.clear()
        spin_until(executor, lambda: False, args.duration)
        window = (frames[0], frames[-1]) if frames else (0.0, 0.0)
        counted = [f for f in frames if f <= window[1]]
        spin_until(executor, lambda: False, 1.0)  # results of the last frames still on their way
        measured = [r for r in receipts if window[0] <= r[0] <= window[1]]
    latencies = np.array([(received - stamp) * 1000.0 for stamp, received, _ in measured])
    return {
        "schedule": schedule,
        "camera_frames": len(counted),
        "results": len(measured),
        "dropped_fraction": round(1.0 - len(measured) / len(counted), 4) if counted else None,
        "latency_ms": {
            "mean": round(float(latencies.mean()), 1), "p50": round(float(np.percentile(latencies, 50)), 1),
            "p95": round(float(np.percentile(latencies, 95)), 1),
        } if latencies.size else None,
        "results_per_s": round(len(measured) / args.duration, 2),
    }


def stream_arguments(description: str | None, warmup_s: float, duration_s: float) -> argparse.ArgumentParser:
    """A parser with the options of a camera -> tracker -> client run: --model, --device, --rate, --warmup,
    --duration, --json."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate [Hz] (default 30)")
    parser.add_argument("--warmup", type=float, default=warmup_s, help="seconds of results not measured first")
    parser.add_argument("--duration", type=float, default=duration_s, help="seconds measured per run")
    parser.add_argument("--json", help="also write the numbers to this file")
    return parser


def main() -> None:
    parser = stream_arguments(__doc__, warmup_s=3.0, duration_s=15.0)
    parser.add_argument("--schedules", nargs="+", default=["full", "fast"], choices=["full", "fast"])
    parser.add_argument("--size", default="640x480", help="camera WxH (default 640x480)")
    args = parser.parse_args()

    env, log_dir = private_ros_environment("glus_ros_latency")

    print(f"camera {args.size} at {args.rate:g} Hz -> tracker ({args.model}, {args.device}) -> subscriber; "
          f"{args.duration:g} s per schedule after {args.warmup:g} s warm-up; {os.cpu_count()} CPUs")
    rows = [run_schedule(args, schedule, env, log_dir) for schedule in args.schedules]
    for row in rows:
        lat = row["latency_ms"] or {"mean": float("nan"), "p50": float("nan"), "p95": float("nan")}
        print(f"  {row['schedule']:>4}: latency mean {lat['mean']:7.1f} ms  p50 {lat['p50']:7.1f} ms  "
              f"p95 {lat['p95']:7.1f} ms | {row['results_per_s']:5.1f} results/s, "
              f"{100 * (row['dropped_fraction'] or 0):4.1f} % of {row['camera_frames']} frames without a result")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
