"""Two training processes (torchrun, gloo on CPU: the DDP path accelerate takes on GPUs) train exactly as one.

The global micro-batch of N processes with batch_size b is the one-process micro-batch of b * N samples, and
DDP averages the processes' gradients, so two processes with gradient accumulation 1 end with the weights of
one process that accumulates their two micro-batches (the same global batch, the same loss average). Only the
main process writes metrics and checkpoints, and a two-process run stopped and resumed ends there too.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from glus_ros.data.synth import write_split
from glus_ros.training.config import config_from_dict
from glus_ros.training.trainer import WEIGHTS_FILE, Trainer, may_skip_heads, never_in_loss

STEPS = 3


def _recipe(root: Path, grad_accum: int) -> dict:
    # contrastive 0: each process keeps its own [SEG] bank, so with it the two layouts differ by design
    return {"name": "ddp", "model": "tiny", "datasets": [{"kind": "synth", "root": str(root), "split": "train"}],
            "samples_per_epoch": 8, "aux": {"point": 1.0}, "loss": {"contrastive": 0.0},
            "optim": {"lr": 1e-3, "warmup_steps": 1, "batch_size": 1, "grad_accum": grad_accum,
                      "max_steps": STEPS},
            "save_every": 1, "keep_checkpoints": 5}


def _torchrun(recipe: Path, out: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "glus_ros.cli", "train", "--config", str(recipe), "--out", str(out), "--no-progress", *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def assert_two_processes_equal_one(out: Path, one: Trainer, reference) -> dict[str, torch.Tensor]:
    """The two-process run in ``out`` ended with ``one``'s weights (within 1e-5), and its one writer logged every
    step once with the global step's loss (the mean over processes); returns ``one``'s trained weights."""
    want = one._trainable_state()
    got = load_file(str(out / "checkpoints" / f"step_{STEPS:07d}" / WEIGHTS_FILE))
    assert got.keys() == want.keys()
    worst = max(((got[k] - want[k]).abs().max().item(), k) for k in want)
    assert worst[0] < 1e-5, worst
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    for row, ref in zip(rows, reference.history, strict=True):
        assert float(row["total"]) == pytest.approx(ref["total"], rel=1e-4)
    return want


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_split(root, "train", 3, seed=11)
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(root, grad_accum=1)))
    assert not may_skip_heads(config_from_dict(_recipe(root, 1)))  # the fast path: no unused-parameter search
    out = tmp_path / "two"
    _torchrun(recipe, out, "--stop-at-step", "2")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001", "step_0000002"]
    _torchrun(recipe, out, "--resume")

    one = Trainer(config_from_dict(_recipe(root, grad_accum=2)), output_dir=tmp_path / "one", progress=False)
    start = {k: v.clone() for k, v in one._trainable_state().items()}
    reference = one.train()
    want = assert_two_processes_equal_one(out, one, reference)
    moved = [k for k in want if not torch.equal(want[k], start[k])]
    assert moved, "nothing trained"
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert (out / "model" / "config.yaml").is_file()


def test_parameters_left_out_of_ddp_never_get_a_gradient(tmp_path: Path) -> None:
    """``never_in_loss`` names exactly the trainable parameters no backward reaches (tiny and grounding map)."""
    root = tmp_path / "data"
    write_split(root, "train", 2, seed=5)
    for overrides in ({}, {"vlm": {"grounding_map": True}}):
        raw = _recipe(root, 1) | {"model_overrides": overrides, "aux": {"point": 1.0, "grounding": 1.0}}
        trainer = Trainer(config_from_dict(raw), output_dir=tmp_path / "run", progress=False)
        batches = trainer._micro_batches()
        for _ in range(2):
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.module(next(batches), trainer.seg_bank)["total"].backward()
            unused = {n for n, p in trainer.module.named_parameters() if p.requires_grad and p.grad is None}
            assert unused == set(never_in_loss(trainer.module)), overrides


def test_the_accelerate_configs_in_training_load_as_accelerate_reads_them() -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    folder = Path(__file__).resolve().parent.parent / "training" / "accelerate"
    ddp = load_config_from_file(str(folder / "ddp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_processes >= 2
    assert (ddp.num_machines, ddp.machine_rank, ddp.mixed_precision, ddp.use_cpu) == (1, 0, "bf16", False)
    zero2 = load_config_from_file(str(folder / "zero2.yaml"))
    assert zero2.distributed_type == DistributedType.DEEPSPEED
    assert zero2.deepspeed_config["zero_stage"] == 2
    assert {"gradient_accumulation_steps", "gradient_clipping", "offload_optimizer_device"} <= set(
        zero2.deepspeed_config)


RELEASE = Path(__file__).parent / "fixtures" / "glus_official"


def _release_recipe(grad_accum: int) -> dict:
    """Fixture ``c``'s release fine-tuned with the official step (training/glus_s.yaml's settings) on the tiny
    MeViS split of fixture ``train_step``. Dropout off (LoRA's and the memory attention's: random masks differ with
    the process layout) and no contrastive term (each process keeps its own bank)."""
    from glus_ros.model.config import deep_update, read_yaml_mapping

    no_dropout = {"sam2": {"memory_attention": {"layer": {"dropout": 0.0, "self_attention": {"dropout": 0.0},
                                                          "cross_attention": {"dropout": 0.0}}}}}
    overrides = deep_update(read_yaml_mapping(RELEASE / "c" / "glus_override.yaml"), no_dropout)
    return {"name": "ddp_release", "model": "glus-s", "model_overrides": overrides,
            "checkpoint": str(RELEASE / "c" / "checkpoint"), "vision_tower": str(RELEASE / "c" / "clip"),
            "gradient_checkpointing": True,
            "datasets": [{"kind": "mevis", "root": str(RELEASE / "train_step" / "data" / "mevis"), "split": "train"}],
            "samples_per_epoch": 8, "loss": {"contrastive": 0.0},
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "optim": {"lr": 1e-3, "warmup_steps": 1, "batch_size": 1, "grad_accum": grad_accum, "max_steps": STEPS},
            "save_every": 1, "keep_checkpoints": 5}


def test_two_processes_fine_tune_the_release_like_one(tmp_path: Path) -> None:
    recipe = tmp_path / "ddp_release.yaml"
    recipe.write_text(yaml.safe_dump(_release_recipe(grad_accum=1)))
    out = tmp_path / "two"
    _torchrun(recipe, out, "--stop-at-step", "2")
    _torchrun(recipe, out, "--resume")

    one = Trainer(config_from_dict(_release_recipe(grad_accum=2)), output_dir=tmp_path / "one", progress=False)
    assert one.release
    start = {k: v.clone() for k, v in one._trainable_state().items()}
    assert any("lora_A" in k for k in start) and any("embed_tokens" in k for k in start)
    reference = one.train()
    want = assert_two_processes_equal_one(out, one, reference)
    assert all(not torch.equal(want[k], start[k]) for k in want if "lora_" in k), "LoRA did not train"
    # the export of a fine-tuned release: the release layout and the adapter, written once
    assert (out / "model" / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
