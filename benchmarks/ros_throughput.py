"""Where the frames of a 30 Hz camera go: camera node + tracker node + a client, three processes as in the launch.

``camera_source`` (config/camera_source.yaml: synthetic RGB-D, reliable, depth on) and ``tracker_node``
(config/tracker.yaml: default model, live schedule) are started as ``ros2 launch glus_ros track.launch.py
with_camera:=true`` starts them; this process configures and activates the tracker, sends the scene's first
expression and subscribes like a plain client (/glus/segmentation, /glus/mask, /camera/camera_info,
/diagnostics). Every camera frame of the measured window is accounted for:

    camera timer   nominal frames (rate x window) the camera did not publish (its timer fell behind)
    dds/executor   published, never reached the tracker's image callback (subscription history overwritten
                   while the executor was busy, or lost in transport)
    rejected       reached the callback, not submitted (decode errors)
    engine drops   submitted, replaced by a newer frame before the model was free (engine.stats)
    engine errors  the model raised on it
    unpublished    processed, no result published (deactivated / shut down in between)
    to client      result published, never received by the client

The tracker's side comes from its /diagnostics totals (images_received, frames_in, frames_dropped,
frames_processed, errors, results_published) at the window's two ends; the camera's from the CameraInfo
it publishes with every frame (received reliably). Prints masks/s, answered % of the published frames and
the breakdown per size, with min/median over ``--repeats``, and the load average. Asserts nothing.

    .venv/bin/python benchmarks/ros_throughput.py [--sizes 320x240 640x480] [--duration 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from ros_latency import REPO, bring_up, camera_tracker_client, private_ros_environment, spin_until, stream_arguments

# the tracker's running totals in its /diagnostics status, in pipeline order
TOTALS = ("images_received", "frames_in", "frames_dropped", "errors", "frames_processed", "results_published")
STAGES = ("camera timer", "dds/executor", "rejected", "engine drops", "engine errors", "unpublished", "to client")


def _stamp(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _cpu_s(pid: int | None = None, tid: int | None = None) -> float:
    """CPU seconds (user + system) a process (or one of its threads) has used so far (Linux /proc; this process
    when ``pid`` is None); 0.0 for a thread that has ended."""
    if pid is None:
        usage = os.times()
        return usage.user + usage.system
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id."""
    return {int(tid): _cpu_s(pid, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _losses(nominal: int, published: int, t: dict[str, int], masks: int, results: int) -> dict[str, int]:
    """Frames lost at each stage (keys: STAGES) from the window's counts; ``t``: deltas of TOTALS."""
    return {
        "camera timer": nominal - published,
        "dds/executor": published - t["images_received"],
        "rejected": t["images_received"] - t["frames_in"],
        "engine drops": t["frames_dropped"],
        "engine errors": t["errors"],
        "unpublished": t["frames_processed"] - t["results_published"],
        "to client": t["results_published"] - results,
    } | {"masks_missing_vs_results": results - masks}


def run_once(args: argparse.Namespace, size: str, env: dict[str, str], log_dir: Path, tag: str) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from glus_ros_msgs.msg import TargetResultArray
    from sensor_msgs.msg import CameraInfo, Image

    from glus_ros.ros.qos import qos_profile

    results: list[float] = []   # image stamps of the results received
    masks: list[float] = []
    frames: list[float] = []    # image stamps of the camera's CameraInfo
    diagnostics: list[tuple[float, dict[str, str]]] = []  # (stamp, values) of the tracker's status

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if values.get("lifecycle_state") == "active" and "images_received" in values:
                diagnostics.append((_stamp(msg.header), values))

    pipeline = camera_tracker_client(args, size, env, log_dir, tag, tracker_args=[],  # the launch's defaults
                                     camera_args=["--params-file", str(REPO / "config" / "camera_source.yaml")])
    with pipeline as (node, executor, (tracker, camera)):
        reliable = qos_profile("reliable", 100)
        node.create_subscription(TargetResultArray, "/glus/segmentation",
                                 lambda m: results.append(_stamp(m.header)), reliable)
        node.create_subscription(Image, "/glus/mask", lambda m: masks.append(_stamp(m.header)), reliable)
        node.create_subscription(CameraInfo, "/camera/camera_info", lambda m: frames.append(_stamp(m.header)),
                                 reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)
        bring_up(node, executor, lambda: len(results) > 0, log_dir)
        spin_until(executor, lambda: False, args.warmup)
        first = len(diagnostics)
        if not spin_until(executor, lambda: len(diagnostics) > first, 5.0):
            raise RuntimeError(f"no /diagnostics with images_received from the tracker; see {log_dir}")
        start = time.monotonic()
        load_before = os.getloadavg()
        cpu_before = {"camera": _cpu_s(camera.pid), "tracker": _cpu_s(tracker.pid), "client": _cpu_s()}
        threads_before = _thread_cpu_s(tracker.pid)
        spin_until(executor, lambda: time.monotonic() - start >= args.duration and len(diagnostics) > first + 1,
                   args.duration + 5.0)
        last = len(diagnostics) - 1
        cpu = {"camera": _cpu_s(camera.pid), "tracker": _cpu_s(tracker.pid), "client": _cpu_s()}
        threads = _thread_cpu_s(tracker.pid)
        cpu_window = time.monotonic() - start
        spin_until(executor, lambda: False, 1.0)  # results of the window's last frames still on their way
        load_after = os.getloadavg()
    (t0, v0), (t1, v1) = diagnostics[first], diagnostics[last]
    window = t1 - t0
    totals = {key: int(v1[key]) - int(v0[key]) for key in TOTALS}

    def in_window(stamps: list[float]) -> int:
        return sum(t0 < s <= t1 for s in stamps)

    published, answered, masked = in_window(frames), in_window(results), in_window(masks)
    nominal = round(args.rate * window)
    return {
        "size": size, "window_s": round(window, 2), "nominal": nominal, "camera_published": published,
        "tracker": totals, "results_received": answered, "masks_received": masked,
        "masks_per_s": round(masked / window, 2), "results_per_s": round(answered / window, 2),
        "answered_pct": round(100.0 * answered / published, 1) if published else 0.0,
        "losses": _losses(nominal, published, totals, masked, answered),
        "groundings_per_s": round((int(v1.get("groundings", 0)) - int(v0.get("groundings", 0))) / window, 2),
        "image_age_ms": {"p50": v1.get("image_age_p50_ms"), "p95": v1.get("image_age_p95_ms")},
        "latency_ms": {"p50": v1.get("latency_p50_ms"), "p95": v1.get("latency_p95_ms")},
        "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
        # CPU time per published frame and share of one core, per process (the tracker's includes its MLLM worker)
        "cpu_ms_per_frame": {k: round(1000.0 * (cpu[k] - cpu_before[k]) / max(published, 1), 2) for k in cpu},
        "cpu_cores": {k: round((cpu[k] - cpu_before[k]) / cpu_window, 2) for k in cpu},
        # the tracker's busiest threads (cores): its MLLM worker, engine worker and executor, unnamed in /proc
        "tracker_thread_cores": sorted((round((t - threads_before.get(tid, 0.0)) / cpu_window, 2)
                                        for tid, t in threads.items()), reverse=True)[:4],
    }


def _summary(size: str, runs: list[dict]) -> str:
    def mm(values: list[float], fmt: str) -> str:
        return f"{format(min(values), fmt)} / {format(statistics.median(values), fmt)}"

    lines = [f"{size}: {len(runs)} run(s), min / median",
             f"  masks/s      {mm([r['masks_per_s'] for r in runs], '.1f')}   "
             f"(results/s {mm([r['results_per_s'] for r in runs], '.1f')})",
             f"  answered     {mm([r['answered_pct'] for r in runs], '.1f')} % of the frames the camera published",
             f"  camera       {mm([r['camera_published'] / r['window_s'] for r in runs], '.1f')} frames/s published "
             f"(nominal {runs[0]['nominal'] / runs[0]['window_s']:.0f})",
             "  cpu ms/frame " + ", ".join(f"{k} {mm([r['cpu_ms_per_frame'][k] for r in runs], '.1f')}"
                                           for k in runs[0]["cpu_ms_per_frame"])
             + "  (cores: " + ", ".join(f"{k} {statistics.median([r['cpu_cores'][k] for r in runs]):.2f}"
                                       for k in runs[0]["cpu_cores"]) + ")",
             f"  MLLM         {mm([r['groundings_per_s'] for r in runs], '.2f')} groundings/s",
             "  lost at      " + ", ".join(f"{s} {mm([r['losses'][s] for r in runs], 'd')}" for s in STAGES)]
    for r in runs:
        lines.append(f"  run: {r['camera_published']} frames in {r['window_s']:.1f} s -> {r['results_received']} "
                     f"results, {r['masks_received']} masks ({r['answered_pct']:.1f} %); image age p50/p95 "
                     f"{r['image_age_ms']['p50']}/{r['image_age_ms']['p95']} ms, latency p50/p95 "
                     f"{r['latency_ms']['p50']}/{r['latency_ms']['p95']} ms; tracker threads "
                     f"{r['tracker_thread_cores']} cores; load {r['load_avg_1m'][0]:.2f} -> "
                     f"{r['load_avg_1m'][1]:.2f}; lost {r['losses']}")
    return "\n".join(lines)


def main() -> None:
    parser = stream_arguments(__doc__, warmup_s=5.0, duration_s=20.0)
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480"], help="camera WxH sizes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (min and median are printed)")
    args = parser.parse_args()

    env, log_dir = private_ros_environment("glus_ros_throughput")
    print(f"camera_source + tracker_node + client, {args.rate:g} Hz, {args.duration:g} s per run after "
          f"{args.warmup:g} s warm-up; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"(1 min); logs in {log_dir}", flush=True)
    rows: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for size in args.sizes:  # sizes interleaved: a burst of load elsewhere hits both alike
            run = run_once(args, size, env, log_dir, f"{size}_{repeat}")
            rows.setdefault(size, []).append(run)
            print(f"  [{size} run {repeat + 1}] {run['masks_per_s']:.1f} masks/s, {run['answered_pct']:.1f} % "
                  f"answered, load {run['load_avg_1m'][1]:.2f}", flush=True)
    for size, runs in rows.items():
        print(_summary(size, runs))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
