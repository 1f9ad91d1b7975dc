"""``glus-ros train --config training/<recipe>.yaml``: fine-tune or train GLUS from a recipe.

Several GPUs: ``accelerate launch --config_file training/accelerate/ddp.yaml -m glus_ros.cli train --config ...``
(or ``torchrun --nproc_per_node N -m glus_ros.cli train ...``: DDP); the same command on one process is the CPU
default.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction, verb: str) -> None:
    parser = subparsers.add_parser(verb, help="train / fine-tune from a recipe (training/*.yaml)", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="recipe YAML, e.g. training/synth_tiny.yaml")
    parser.add_argument("--out", type=Path, help="run folder (default: the recipe's output_dir)")
    parser.add_argument("--data-root", type=Path, default=Path.cwd(),
                        help="base of relative dataset roots in the recipe (default: current folder)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from the run's latest checkpoint (or the one given)")
    parser.add_argument("--stop-at-step", type=int, help="stop (with a checkpoint) at this step, e.g. a job time slot")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a recipe value, e.g. -o optim.max_steps=10 (repeatable)")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="also write the finished model folder here (e.g. models/<name> to ship it by name)")
    parser.add_argument("--export-dtype", choices=["fp32", "fp16"], default="fp32",
                        help="weights dtype of the --export copy (fp16: half the size, for shipping)")
    parser.add_argument("--key-frame-only", action="store_true",
                        help="only (re)train the key-frame selector of the run's finished model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glus_ros.training.config import load_train_config
    from glus_ros.training.trainer import Trainer

    cfg = load_train_config(args.config, args.override)
    trainer = Trainer(cfg, data_root=args.data_root, output_dir=args.out, progress=not args.no_progress)
    resume = Path(args.resume) if isinstance(args.resume, str) else bool(args.resume)
    if trainer.accelerator.is_main_process:
        print(f"recipe {cfg.name}: model {cfg.model}, {trainer.num_trainable:,} trainable parameters, "
              f"{len(trainer.dataset)} samples/epoch, {cfg.optim.max_steps} steps -> {trainer.out}")
    if args.key_frame_only:
        stats = trainer.train_key_frame_selector()
        print("key-frame selector: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in stats.items()))
        _export(trainer.out / "model", args.export, args.export_dtype)
        return 0
    result = trainer.train(resume=resume, until_step=args.stop_at_step)
    if trainer.accelerator.is_main_process:
        if result.evals:
            last = result.evals[-1]
            print(f"J&F {last['j_and_f']:.3f} (J {last['j']:.3f}, F {last['f']:.3f}) at step {int(last['step'])}")
        print(f"stopped at step {result.steps}; model: {result.model_dir or 'not exported (run not finished)'}")
        if result.model_dir is not None:
            _export(result.model_dir, args.export, args.export_dtype)
    return 0


def _export(model_dir: Path, dest: Path | None, dtype: str = "fp32") -> None:
    if dest is None:
        return
    import shutil

    from glus_ros.inference import load_model
    from glus_ros.model.checkpoints import save_model_dir

    save_model_dir(load_model(model_dir), dest, storage=dtype)
    shutil.copy2(model_dir / "train_recipe.yaml", dest / "train_recipe.yaml")
    print(f"exported the model to {dest} ({dtype})")
