"""``glus-ros segment`` with a concept backend (SAM 3): every instance of the phrase, each with its own masks.

Why through the streaming engine: the offline run is the live one with detection on every frame (schedule
"full", as SAM 3's video model detects on every frame), so ids, births, losses and re-findings are exactly what
a robot would get. Written: ``<frame>.png`` (the union of the instances, as the other backends write),
``instances/<k>/<frame>.png`` (instance k's mask), and in ``result.json`` each instance's id, first frame and
frames seen, the instances visible per frame (``counts``) and, for a counting question, the ``answer``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glus_ros.model.region import Region


def run_concept_backend(args: argparse.Namespace, expression: str, region: Region | None, frames: list[np.ndarray],
                        names: list[str], fps: float, out: Path, write_outputs: Callable) -> int:
    from glus_ros.backends.loading import load_backend
    from glus_ros.inference import VideoSegmentation
    from glus_ros.streaming.build import make_engine
    from glus_ros.streaming.engine import EngineConfig
    from glus_ros.streaming.types import StreamFrame, TargetSpec
    from glus_ros.video_io import write_mask_png

    unsupported = [flag for flag, used in (("--points", args.points), ("--key-frame", args.key_frame),
                                           ("--start-frame", args.start_frame != 0),
                                           ("--point-source", args.point_source != "auto"),
                                           ("--anchors", args.anchors != "key"),
                                           ("--vision-tower", args.vision_tower is not None),
                                           ("--adapter", args.adapter is not None),
                                           ("--model-override", args.model_override is not None)) if used]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not available with the SAM 3 model {args.model} (it detects "
                         "every instance on every frame and tracks each forward)")
    args.dtype = args.dtype or "fp32"
    backend = load_backend(args.model, args.checkpoint, args.sam2_checkpoint, args.device, args.dtype)
    engine = make_engine(backend, EngineConfig(schedule="full", dtype=args.dtype, max_targets=1))
    start = 0 if region is None else region.frame
    spec = TargetSpec("target", "" if region is not None else expression, region=region)
    height, width = frames[0].shape[:2]
    union = [np.zeros((height, width), dtype=bool) for _ in frames]
    scores = np.zeros(len(frames), dtype=np.float32)
    counts = [0] * len(frames)
    instances: dict[str, dict] = {}
    answer = None
    t0 = time.perf_counter()
    for i, frame in enumerate(tqdm(frames, desc="segment", unit="frame")):
        if i == start:
            engine.add_target(spec)
        result = engine.process(StreamFrame(frame, i / fps, seq=i))
        for target in result.targets:
            if target.target_id == spec.target_id:   # no instance yet
                continue
            k = target.target_id.rsplit("/", 1)[1]
            seen = instances.setdefault(k, {"id": target.target_id, "first_frame": i, "frames": 0, "masks": {}})
            if target.state != "lost":
                seen["frames"] += 1
                seen["masks"][i] = target.mask
                union[i] |= target.mask
                scores[i] = max(scores[i], target.score)
                counts[i] += 1
            answer = target.answer or answer
    took = time.perf_counter() - t0
    for k, seen in instances.items():
        folder = out / "instances" / k
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            write_mask_png(folder / f"{name}.png", seen["masks"].get(i, np.zeros((height, width), dtype=bool)))
    result = VideoSegmentation(union, scores, start, {"total_s": took, "per_frame_s": took / len(frames)})
    extra = {"backend": backend.name, "phrase": None if region is not None else backend.clean(expression),
             "instances": [{"id": s["id"], "first_frame": s["first_frame"], "frames_seen": s["frames"]}
                           for s in instances.values()],
             "counts": counts, "answer": answer}
    write_outputs(args, expression, region, frames, names, fps, out, result, None, extra)
    print(f"{len(instances)} instance(s) of {extra['phrase'] or 'the region'!r}: masks in {out / 'instances'}")
    return 0
