"""Bag size of ``glus-ros record``, raw against zstd, on a live 640x480 30 Hz camera (docs/ros.md numbers).

Why: recording raw images fills a disk fast (20 s of 640x480 rgb8 at 30 Hz is ~550 MB of images alone).
Each row starts ``glus-ros camera`` in a child process and records its image topic for ``--seconds``
with the given storage and compression, then reports messages, MB on disk and MB per recorded second.
Sources: the synthetic scene (flat colours, drawn small and upscaled: compresses far better than a real
camera) and the same frames with Gaussian sensor noise (sigma ``--noise``) published from a frame folder,
closer to what a real sensor gives. Also times reading every image back (convert-bag's cost).

    python benchmarks/bag_compression.py --seconds 20 --out /tmp/bag_compression
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from glus_ros.recording.bag_to_dataset import BagMessages
from glus_ros.recording.recorder import record
from glus_ros.ros.camera_source import open_source
from glus_ros.ros_env import apply_ros_environment, ros_environment

IMAGE_TOPIC = "/camera/image_raw"


def noisy_frames(folder: Path, count: int, sigma: float, width: int, height: int) -> None:
    """The synthetic scene's first ``count`` frames plus Gaussian noise, as PNG files (lossless)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = open_source("synth", synth_frames=count, synth_width=width, synth_height=height)
    rng = np.random.default_rng(0)
    for i in range(count):
        frame = source.read_next()
        assert frame is not None
        noisy = np.clip(frame.rgb.astype(np.float32) + rng.normal(0.0, sigma, frame.rgb.shape), 0, 255)
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(noisy.astype(np.uint8), cv2.COLOR_RGB2BGR))


def record_row(source: str, storage: str, compression: str, seconds: float, args: argparse.Namespace,
               out: Path) -> dict[str, float | str]:
    bag = out / f"{Path(source).name}_{storage}_{compression}"
    env = ros_environment()
    env.update({"ROS_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"], "PYTHONUNBUFFERED": "1"})
    camera = subprocess.Popen(
        [sys.executable, "-m", "glus_ros.cli", "camera", "--source", source, "--rate", str(args.rate), "--no-depth",
         "--width", str(args.width), "--height", str(args.height)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3.0)  # the camera's start-up: its first frame is published before the recorder subscribes
        summary = record([IMAGE_TOPIC], bag, storage=storage, duration_s=seconds, compression=compression)
    finally:
        camera.terminate()
        camera.wait(10)
    start = time.monotonic()
    reader = BagMessages(bag)
    try:
        read = sum(1 for _ in reader.messages([IMAGE_TOPIC]))
    finally:
        reader.close()
    frames = summary.counts.get(IMAGE_TOPIC, 0)
    return {"source": Path(source).name, "storage": storage, "compression": compression, "frames": frames,
            "mb": summary.bytes_on_disk / 1e6, "mb_per_s": summary.bytes_on_disk / 1e6 / seconds,
            "fps": frames / seconds, "read_s": time.monotonic() - start, "read": read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise sigma for the noisy source [levels]")
    parser.add_argument("--storages", nargs="+", default=["mcap"], choices=["mcap", "sqlite3"])
    parser.add_argument("--out", type=Path, required=True, help="folder for the bags (must not hold them yet)")
    args = parser.parse_args()
    apply_ros_environment()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    args.out.mkdir(parents=True, exist_ok=True)
    noisy = args.out / "synth_noisy"
    noisy_frames(noisy, 64, args.noise, args.width, args.height)
    rows = []
    for source in ("synth", str(noisy)):
        for storage in args.storages:
            for compression in ("none", "zstd"):
                row = record_row(source, storage, compression, args.seconds, args, args.out)
                rows.append(row)
                print(f"{row['source']:12s} {storage:7s} {compression:5s} {row['frames']:4d} frames "
                      f"({row['fps']:.1f}/s) {row['mb']:8.1f} MB ({row['mb_per_s']:.2f} MB/s), "
                      f"read back in {row['read_s']:.1f} s", flush=True)
    for source in ("synth", noisy.name):
        for storage in args.storages:
            raw, packed = (next(r for r in rows if r["source"] == source and r["storage"] == storage
                                and r["compression"] == c) for c in ("none", "zstd"))
            ratio = (float(raw["mb"]) / float(raw["frames"])) / (float(packed["mb"]) / float(packed["frames"]))
            print(f"{source} {storage}: zstd is {ratio:.1f}x smaller per frame")


if __name__ == "__main__":
    main()
