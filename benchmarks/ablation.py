"""The GLUS ablation (paper Table 3) on the synthetic benchmark, at an equal training budget per row.

Rows: global-only (the MLLM sees context frames only), local-only (query frames only), GLU (both),
+ memory bank, + object contrastive loss, + key-frame selector. Every row trains the tiny model from
scratch with the default recipe (training/synth_tiny.yaml) shortened to ``--steps`` and is scored on
the same held-out synthetic split. Rows run one after another; ``--rows`` picks some, ``--jobs`` is
for the caller to run several invocations side by side (each writes its own CSV row).

    python benchmarks/ablation.py --steps 800 --rows global local --out runs/ablation
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from glus_ros.training.config import load_train_config
from glus_ros.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
NO_MEMORY = {"memory": {"enabled": False}}
ROWS: dict[str, tuple[dict, float]] = {  # name -> (model overrides, contrastive weight)
    "global": ({**NO_MEMORY, "sampling": {"query_in_prompt": False}}, 0.0),
    "local": ({**NO_MEMORY, "sampling": {"num_context": 0}}, 0.0),
    "glu": (NO_MEMORY, 0.0),
    "memory": ({}, 0.0),
    "contrastive": ({}, 0.1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--rows", nargs="+", default=[*ROWS, "key_frame"], choices=[*ROWS, "key_frame"])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--eval-videos", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = args.out / "ablation.csv"
    for row in args.rows:
        name = "contrastive" if row == "key_frame" else row
        overrides, contrastive = ROWS[name]
        cfg = load_train_config(REPO / "training" / "synth_tiny.yaml", [
            f"optim.max_steps={args.steps}", f"loss.contrastive={contrastive}", f"eval.every_steps={args.steps}",
            f"eval.dataset.max_videos={args.eval_videos}", f"save_every={args.steps}",
            f"key_frame.enabled={'true' if row == 'key_frame' else 'false'}",
        ])
        cfg.model_overrides = overrides
        cfg.name = f"ablation_{row}"
        run_dir = args.out / row
        t0 = time.perf_counter()
        trainer = Trainer(cfg, data_root=REPO, output_dir=run_dir, progress=False)
        evals: list[dict[str, float]] = []
        if row == "key_frame" and (args.out / "contrastive" / "model" / "config.yaml").is_file():
            # the +key-frame row reuses the +contrastive model: train only its selector on a copy
            import shutil

            shutil.copytree(args.out / "contrastive" / "model", run_dir / "model", dirs_exist_ok=True)
            stats = trainer.train_key_frame_selector(run_dir / "model")
        else:
            result = trainer.train()
            stats, evals = result.key_frame or {}, result.evals
        if row != "key_frame" and evals:  # the run already scored its final weights on this split
            last = evals[-1]
            scores = {k: round(float(last[k]), 4) for k in ("j", "f", "j_and_f")}
            scores["expressions"] = int(last["expressions"])
        else:
            scores = evaluate(run_dir / "model", REPO / "data" / "synth", args.eval_videos,
                              key_frame=row == "key_frame")
        minutes = (time.perf_counter() - t0) / 60
        line = {"row": row, "steps": args.steps, **scores, "minutes": round(minutes, 1),
                **{f"kf_{k}": v for k, v in stats.items()}}
        print(line, flush=True)
        new = not table.exists()
        table.parent.mkdir(parents=True, exist_ok=True)
        with table.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(line))
            if new:
                writer.writeheader()
            writer.writerow(line)


def evaluate(model_dir: Path, data: Path, max_videos: int, key_frame: bool) -> dict[str, float]:
    import tempfile

    from glus_ros.datasets.mevis import MevisDataset
    from glus_ros.evaluation import evaluate_predictions
    from glus_ros.inference import predict_dataset
    from glus_ros.training.data import VideoSubset

    reader = VideoSubset(MevisDataset(data, "valid"), max_videos)
    with tempfile.TemporaryDirectory() as tmp:
        predict_dataset(model_dir, reader, Path(tmp), key_frame=key_frame, progress=False)
        result = evaluate_predictions(tmp, reader)
    return {"j": round(result.j, 4), "f": round(result.f, 4), "j_and_f": round(result.j_and_f, 4),
            "expressions": result.num_expressions}


if __name__ == "__main__":
    main()
