"""``glus-ros eval``: score predicted masks (or a model, run first) on MeViS or Ref-YouTube-VOS."""

from __future__ import annotations

import argparse
from pathlib import Path

from glus_ros.commands.options import add_weights_arguments, load_model_from_args
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.datasets.refytvos import RefYoutubeVosDataset
from glus_ros.evaluation import ReferringDataset, evaluate_predictions, write_csv
from glus_ros.model.config import DEFAULT_MODEL

DATASETS = {"mevis": MevisDataset, "refytvos": RefYoutubeVosDataset}


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(
        verb,
        help="J, F and J&F of predicted masks on MeViS / Ref-YouTube-VOS",
        description=__doc__,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pred", type=Path, help="prediction folder: <pred>/<video>/<exp_id>/<frame>.png")
    source.add_argument("--model", help="model spec to run on the split first, then score its predictions "
                                        f"(default without --pred: {DEFAULT_MODEL}, the shipped model)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (holds <split>/JPEGImages)")
    parser.add_argument("--split", default="valid", help="dataset split (default: valid)")
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), default="mevis", help="layout (default: mevis)"
    )
    parser.add_argument("--csv", type=Path, help="per-expression scores (default: <pred>/eval_<split>.csv)")
    parser.add_argument(
        "--allow-missing", action="store_true", help="score missing predictions as empty masks"
    )
    add_weights_arguments(parser.add_argument_group("--model: weights (as for segment; the released GLUS weights: "
                                                    "--model glus-s --checkpoint DIR --vision-tower DIR)"))
    parser.add_argument("--key-frame", action="store_true", help="--model: use the key-frame selector")
    parser.add_argument("--out", type=Path, help="--model: prediction folder (default: ./eval_pred_<split>)")
    parser.add_argument("--points", action="store_true",
                        help="--model: score pointing instead (point accuracy, count accuracy, J&F of "
                             "point-prompted masks); points from --point-source")
    parser.add_argument("--anchors", default="key", help="--points: 'key' or a frame stride K")
    parser.add_argument("--point-source", choices=["auto", "head", "mask"], default="auto",
                        help="--points: the point head, the [SEG] masks' components, or auto (head if present)")
    live = parser.add_argument_group("live replay (--live)")
    live.add_argument("--live", action="store_true",
                      help="--model: replay every video frame by frame through the streaming engine, causally, "
                           "and score its masks (glus_ros/live_eval.py)")
    live.add_argument("--rate", type=float, default=0.0,
                      help="--live: camera rate in Hz, frames the tracker has no time for are dropped; "
                           "0 (default): no drops, the replay waits for the tracker and the MLLM worker")
    live.add_argument("--schedule", choices=["live", "fast", "full"], default="live",
                      help="--live: the engine's schedule (default: live)")
    live.add_argument("--reground-every", type=int, default=1,
                      help="--live: frames a prompt may age before the MLLM re-grounds (default: 1)")
    live.add_argument("--context-refresh", type=int, default=8,
                      help="--live: frames a choice of context frames is kept (default: 8)")
    parser.set_defaults(func=run)


def open_dataset(kind: str, root: Path, split: str) -> ReferringDataset:
    """The reader for ``kind`` (one of DATASETS) over ``root``/``split``."""
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset {kind!r}; choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[kind](root, split)


def run(args: argparse.Namespace) -> int:
    if args.pred is None and args.model is None:  # as segment and track: the shipped model unless told otherwise
        args.model = DEFAULT_MODEL
    dataset = open_dataset(args.dataset, args.data, args.split)
    if args.points:
        return _run_points(args, dataset)
    if args.live:
        return _run_live(args, dataset)
    if args.model is not None:
        from glus_ros.inference import predict_dataset  # heavy (torch, weights): only when asked

        out_dir = args.out if args.out is not None else Path.cwd() / f"eval_pred_{args.split}"
        model = load_model_from_args(args)
        pred_dir = Path(predict_dataset(model=model, dataset=dataset, out_dir=out_dir, key_frame=args.key_frame,
                                        dtype=args.dtype))
    else:
        pred_dir = args.pred

    result = evaluate_predictions(pred_dir, dataset, allow_missing=args.allow_missing, progress=True)
    csv_path = write_csv(result, args.csv if args.csv is not None else pred_dir / f"eval_{args.split}.csv")

    print(f"J: {result.j:.3f}")
    print(f"F: {result.f:.3f}")
    print(f"J&F: {result.j_and_f:.3f}")
    print(f"expressions: {result.num_expressions}")
    if result.missing:
        print(f"missing predictions scored as empty: {result.missing}")
    print(f"csv: {csv_path}")
    return 0


def _run_points(args: argparse.Namespace, dataset: ReferringDataset) -> int:
    """Pointing scores: a predicted point counts when it falls inside a referred object's mask (1:1)."""
    if args.model is None:
        raise ValueError("--points scores a model: give --model")
    from glus_ros.points.evaluation import evaluate_points

    anchors: str | int = args.anchors if args.anchors == "key" else int(args.anchors)
    model = load_model_from_args(args)
    if args.point_source == "head" and model.point_head is None:
        raise ValueError(f"--point-source head: model {args.model} has no point head")
    result = evaluate_points(model, dataset, anchors, progress=True,  # type: ignore[arg-type]
                             source=args.point_source)
    print(f"point accuracy: {result.point_accuracy:.3f}")
    print(f"count accuracy (every frame): {result.count_accuracy:.3f}")
    if result.counting_accuracy is not None:
        print(f"counting accuracy ('how many' expressions): {result.counting_accuracy:.3f}")
    print(f"J&F of point-prompted masks: {result.j_and_f:.3f} (J {result.j:.3f}, F {result.f:.3f})")
    print(f"expressions: {len(result.expressions)}")
    return 0


def _run_live(args: argparse.Namespace, dataset: ReferringDataset) -> int:
    """Replay the split through the streaming engine (``glus_ros/live_eval.py``), then score like ``--pred``."""
    if args.model is None:
        raise ValueError("--live replays a model: give --model")
    if args.rate < 0:
        raise ValueError(f"--rate must be >= 0 Hz (0: no drops), got {args.rate}")
    import torch

    from glus_ros.live_eval import predict_dataset_live
    from glus_ros.streaming.engine import EngineConfig

    model = load_model_from_args(args)
    # the released weights run in their own precision (args.dtype is the weights'); autocast only for the own family
    autocast = args.dtype if model.cfg.official is None else "fp32"
    config = EngineConfig(schedule=args.schedule, reground_every=args.reground_every,
                          context_refresh=args.context_refresh, cpu_threads=1 if args.device == "cpu" else 0,
                          dtype=autocast)
    mode = f"{args.rate:g} Hz with drops" if args.rate else "no drops"
    out_dir = args.out if args.out is not None else Path.cwd() / f"eval_live_{args.split}"
    stats = predict_dataset_live(model, dataset, out_dir, config, args.rate)
    result = evaluate_predictions(out_dir, dataset, progress=True)
    csv_path = write_csv(result, args.csv if args.csv is not None else out_dir / f"eval_{args.split}.csv")
    print(f"live replay ({args.schedule} schedule, {mode}, torch threads {torch.get_num_threads()})")
    print(f"J: {result.j:.3f}")
    print(f"F: {result.f:.3f}")
    print(f"J&F: {result.j_and_f:.3f}")
    print(f"expressions: {result.num_expressions}")
    print(f"frames answered: {stats.answered} of {stats.frames} ({100 * stats.answered_fraction:.1f}%), "
          f"with a grounded target: {stats.grounded} ({100 * stats.grounded_fraction:.1f}%)")
    print(f"latency p50 {stats.latency(50):.1f} ms, p95 {stats.latency(95):.1f} ms; "
          f"MLLM passes {stats.groundings}")
    print(f"csv: {csv_path}")
    return 0
