"""The training loop on real tiny models and real generated data: recipes, resume, LoRA, learning."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from glus_ros.cli import main as cli_main
from glus_ros.data.synth import write_split
from glus_ros.model.checkpoints import WEIGHTS_FILE
from glus_ros.model.config import load_config
from glus_ros.training.config import config_from_dict, load_train_config, parse_override
from glus_ros.training.trainer import Trainer, lr_factor

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "training" / "experiments"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_split(root, "train", 3, seed=11)
    write_split(root, "valid", 1, seed=12)
    return root


def recipe(data_root: Path, **changes: object) -> dict:
    raw = {
        "name": "test",
        "model": "tiny",
        "datasets": [{"kind": "synth", "root": str(data_root), "split": "train"}],
        "samples_per_epoch": 6,
        "aux": {"point": 1.0, "attributes": 1.0},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 1, "grad_accum": 2, "max_steps": 4},
        "save_every": 2,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def trainable(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer._trainable_state().items()}


def test_shipped_recipes_parse_and_name_existing_models():
    for name in ("synth_tiny", "glus_s", "glus_a"):
        cfg = load_train_config(REPO / "training" / f"{name}.yaml")
        assert cfg.datasets, name
        assert cfg.model in ("tiny", "glus-s"), name
    stage2 = load_train_config(EXPERIMENTS / "synth_tiny_grounding.yaml")  # the default's second stage
    assert stage2.vision_pretrain.enabled and stage2.model == "runs/synth_tiny/model"
    assert stage2.datasets[0].kind == "synth" and stage2.datasets[0].seed != stage2.eval.dataset.seed
    stage3 = load_train_config(EXPERIMENTS / "synth_tiny_spatial.yaml")  # the default's third stage
    assert stage3.model == "runs/synth_tiny_grounding/model" and not stage3.vision_pretrain.enabled
    assert stage3.model_overrides["vlm"]["grounding_spatial"] and stage3.aux.grounding_pick > 0
    assert stage3.datasets[0].seed == stage2.datasets[0].seed != stage3.eval.dataset.seed
    stage4 = load_train_config(EXPERIMENTS / "synth_tiny_spatial_round2.yaml")  # stage 3 again, 1,000 steps
    assert stage4.model == "runs/synth_tiny_spatial/model" and stage4.aux == stage3.aux
    # the default was made by stage 3's recipe stopped at step 1,000: the round-2 schedule is the same
    assert max(abs(lr_factor(s, stage4) - lr_factor(s, stage3)) for s in range(stage4.optim.max_steps)) < 1e-5
    stage6 = load_train_config(EXPERIMENTS / "synth_tiny_motion.yaml")
    assert stage6.model_overrides["vlm"]["grounding_motion"] == 4
    assert stage6.aux.motion > 0 and stage6.aux.grounding_anchor > 0
    stage7 = load_train_config(EXPERIMENTS / "synth_tiny_motion_round2.yaml")
    assert stage7.motion_pretrain.enabled and stage7.aux == stage6.aux
    # the counting rounds (experiments on the ninth stage): "how many" questions beside the referring ones
    count = load_train_config(EXPERIMENTS / "synth_tiny_count_round.yaml")
    assert count.model == "runs/synth_tiny_motion_round4/model" and count.aux == stage6.aux
    assert {d.kind for d in count.datasets} == {"synth", "synth_count"}
    assert all(d.seed != count.eval.dataset.seed for d in count.datasets)
    count2 = load_train_config(EXPERIMENTS / "synth_tiny_count_round2.yaml")
    ratios = {d.kind: d.ratio for d in count2.datasets}
    assert count2.model == "runs/synth_tiny_count_round/model" and ratios["synth_count"] < ratios["synth"]
    # counting rounds on the eleventh stage (full fine-tuning, each on the previous round's output)
    previous, lr = "synth_tiny_motion_round6", 1.0
    for n in (12, 13, 14):
        rnd = load_train_config(EXPERIMENTS / f"synth_tiny_count_stage{n}.yaml")
        assert rnd.model == f"runs/{previous}/model" and rnd.trainable is None and rnd.adapter is None
        assert {d.kind for d in rnd.datasets} == {"synth", "synth_count"} and rnd.optim.lr <= lr
        previous, lr = rnd.name, rnd.optim.lr
    # the default's twelfth stage: a counting adapter over the frozen eleventh stage
    adapter = load_train_config(EXPERIMENTS / "synth_tiny_count_adapter.yaml")
    assert adapter.model == "runs/synth_tiny_motion_round6/model" and adapter.trainable == ["llm_lora"]
    assert adapter.adapter is not None and adapter.adapter.task == "counting" and not adapter.key_frame.enabled
    ratios = {d.kind: d.ratio for d in adapter.datasets}
    assert ratios["synth_count"] > ratios["synth"]
    s = load_train_config(REPO / "training" / "glus_s.yaml")
    # paper hyper-parameters: LoRA rank 8, lr 3e-4, batch 2 x accumulation 10, MeViS:Ref-YouTube-VOS 1:1
    assert (s.lora.rank, s.optim.lr, s.optim.batch_size, s.optim.grad_accum) == (8, 3e-4, 2, 10)
    assert {d.kind: d.ratio for d in s.datasets} == {"mevis": 1.0, "refytvos": 1.0}
    # as the official train_ds.py: LoRA on q_proj / v_proj only; the trainable groups are the release config's own
    assert s.lora.target_modules == ["q_proj", "v_proj"] and s.trainable is None and s.gradient_checkpointing
    assert load_config("glus-s").trainable == ["llm_lora", "projections", "mask_decoder", "token_embeddings"]
    bags = load_train_config(REPO / "training" / "robot_bags_release.yaml")  # composes on glus_s
    assert bags.model == "glus-s" and bags.lora == s.lora and [d.root for d in bags.datasets] == ["data/robot-bags"]


def test_the_default_script_chains_its_stages_each_on_the_previous_output():
    script = (REPO / "scripts" / "train_default.sh").read_text()
    body = script.split("set -euo pipefail", 1)[1].replace("$stage", "")
    stages = re.findall(r"training/(?:experiments/)?(\w+)\.yaml", body)
    loop = re.search(r"for stage in ([\w\s\\]+); do", script)
    assert loop is not None
    order = [*loop.group(1).replace("\\", " ").split(), *stages]
    assert order[0] == "synth_tiny" and order[-1] == "synth_tiny_count_adapter" and len(order) == 12
    for previous, stage in itertools.pairwise(order):
        path = EXPERIMENTS / f"{stage}.yaml"
        path = path if path.is_file() else REPO / "training" / f"{stage}.yaml"
        assert load_train_config(path).model == f"runs/{previous}/model", stage
    assert "--export models/glus-tiny-synth" in script.split(f"training/experiments/{order[-1]}.yaml", 1)[1]


def test_recipe_errors_name_the_problem(tmp_path: Path, data_root: Path):
    with pytest.raises(ValueError, match="unknown keys \\['optimiser'\\]"):
        config_from_dict({**recipe(data_root), "optimiser": {}}, "r.yaml")
    with pytest.raises(ValueError, match="datasets\\[0\\]: kind must be one of"):
        config_from_dict(recipe(data_root, datasets=[{"kind": "coco", "root": "x"}]), "r.yaml")
    with pytest.raises(ValueError, match="needs at least one entry under 'datasets'"):
        config_from_dict(recipe(data_root, datasets=[]), "r.yaml")
    with pytest.raises(ValueError, match=r"optim\.lr must be > 0"):
        config_from_dict(recipe(data_root, optim={"lr": 0}), "r.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    # YAML 1.1 reads 6e-4 (no dot) as text: numbers given so still work, other text is a clear error
    written = tmp_path / "r.yaml"
    written.write_text(yaml.safe_dump(recipe(data_root)))
    cfg = load_train_config(written, ["optim.lr=6e-4", "loss.bce=2e0", "vision_pretrain.lr=1e-3"])
    assert (cfg.optim.lr, cfg.loss["bce"], cfg.vision_pretrain.lr) == (6e-4, 2.0, 1e-3)
    # and a bare `no` as false: `mixed_precision: no` means no mixed precision, anything else is an error
    assert load_train_config(written, ["mixed_precision=no"]).mixed_precision == "no"
    assert load_train_config(written, ["mixed_precision=bf16"]).mixed_precision == "bf16"
    with pytest.raises(ValueError, match="mixed_precision must be 'no' or 'bf16', got 'fp16'"):
        load_train_config(written, ["mixed_precision=fp16"])
    with pytest.raises(ValueError, match="optim: lr must be a number, got 'fast'"):
        config_from_dict(recipe(data_root, optim={"lr": "fast"}), "r.yaml")
    with pytest.raises(ValueError, match=r"loss\.bce must be a number"):
        config_from_dict(recipe(data_root, loss={"bce": "x"}), "r.yaml")
    with pytest.raises(ValueError, match="not key=value"):
        parse_override("optim.lr")
    assert parse_override("optim.max_steps=7") == {"optim": {"max_steps": 7}}
    missing = config_from_dict(recipe(data_root, datasets=[{"kind": "mevis", "root": str(tmp_path)}],
                                      aux={"attributes": 0.0}), "r.yaml")
    with pytest.raises(FileNotFoundError):
        Trainer(missing, output_dir=tmp_path / "run", progress=False)


def test_learning_rate_warms_up_then_decays(data_root: Path):
    cfg = config_from_dict(recipe(data_root, optim={"warmup_steps": 4, "max_steps": 12, "min_lr_ratio": 0.1}))
    factors = [lr_factor(s, cfg) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert factors[12] == pytest.approx(0.1)


def test_positive_pairs_share_a_batch_and_turn_on_the_contrastive_loss(tmp_path: Path, data_root: Path):
    raw = recipe(data_root, samples_per_epoch=8, optim={"batch_size": 4, "grad_accum": 1, "max_steps": 2})
    plain = Trainer(config_from_dict(raw), output_dir=tmp_path / "plain", progress=False)
    cfg = config_from_dict({**raw, "positive_pairs": True})
    paired = Trainer(cfg, output_dir=tmp_path / "paired", progress=False)
    batches = paired._epoch_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    source = paired.dataset.datasets[0]
    has_pair = []
    for batch in batches:                         # whole pairs (2i, 2i + 1), side by side
        assert all(batch[j] % 2 == 0 and batch[j + 1] == batch[j] + 1 for j in range(0, len(batch), 2))
        keys = [paired.dataset[i].object_key for i in batch]
        anchors = [paired.dataset.source(i)[1] for i in batch[::2]]
        pairs = [keys[2 * n] == keys[2 * n + 1] for n in range(len(anchors))]
        # a partner of the same object set whenever the anchor's object has another expression
        assert all(same for same, a in zip(pairs, anchors, strict=True) if source.positives(a))
        has_pair.append(any(pairs))
    assert any(has_pair)
    assert sorted(i for b in plain._epoch_batches(0) for i in b) == list(range(8))
    paired.train()
    rows = list(csv.DictReader((tmp_path / "paired" / "metrics.csv").open()))
    assert [float(r["contrastive"]) > 0 for r in rows] == has_pair
    with pytest.raises(ValueError, match=r"even optim\.batch_size"):
        config_from_dict({**raw, "positive_pairs": True, "optim": {**raw["optim"], "batch_size": 3}})


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path: Path, data_root: Path):
    cfg = config_from_dict(recipe(data_root))
    whole = Trainer(cfg, output_dir=tmp_path / "whole", progress=False)
    whole.train()
    expected = trainable(whole)

    first = Trainer(cfg, output_dir=tmp_path / "split", progress=False)
    first.train(until_step=2)
    assert first.latest_checkpoint() is not None and first.latest_checkpoint().name == "step_0000002"
    assert not (tmp_path / "split" / "model").exists()  # unfinished runs export nothing
    del first
    second = Trainer(cfg, output_dir=tmp_path / "split", progress=False)
    assert second.step == 0
    second.train(resume=True)
    assert second.step == 4
    got = trainable(second)
    assert got.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    rows = list(csv.DictReader((tmp_path / "split" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {r["batch"] for r in rows} == {"referring"}  # no grounded: section, no grounded steps
    # the exported model directory loads by path and carries the trained weights
    from glus_ros.inference import load_model

    exported = load_model(tmp_path / "split" / "model")
    ref = second.accelerator.unwrap_model(second.module).model.state_dict()
    for key, value in exported.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_resume_without_checkpoint_or_with_other_recipe_is_an_error(tmp_path: Path, data_root: Path):
    cfg = config_from_dict(recipe(data_root))
    trainer = Trainer(cfg, output_dir=tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.train(resume=True)
    trainer.train(until_step=2)
    other = config_from_dict(recipe(data_root, aux={"point": 0.0, "attributes": 0.0}))
    with pytest.raises(ValueError, match="does not match this recipe's trainable parameters"):
        Trainer(other, output_dir=tmp_path / "run", progress=False).train(resume=True)


def test_lora_trains_adapters_only_and_export_merges_them(tmp_path: Path, data_root: Path):
    cfg = config_from_dict(recipe(data_root, trainable=["llm_lora", "projections", "mask_decoder", "memory"],
                                  optim={"max_steps": 2, "lr": 1e-2}, aux={"point": 0.0, "attributes": 0.0}))
    trainer = Trainer(cfg, output_dir=tmp_path / "lora", progress=False)
    model = trainer.accelerator.unwrap_model(trainer.module).model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert not any(n.startswith("vlm.vision_tower") or n.startswith("sam.sam.image_encoder") for n in names)
    base_before = {n: p.clone() for n, p in model.vlm.language_model.named_parameters() if "base_layer" in n}
    trainer.train()
    for n, p in model.vlm.language_model.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), f"frozen base weight {n} changed"
    # the exported model has plain (merged) layers and reproduces the adapted model's [SEG] prompts
    from glus_ros.inference import load_model

    exported = load_model(tmp_path / "lora" / "model").eval()
    assert not any("lora_" in k for k in exported.state_dict())
    model.eval()
    torch.manual_seed(0)
    ctx, qry = torch.randn(1, 4, 16, 192), torch.randn(1, 4, 16, 192)
    with torch.no_grad():
        want = model.seg_prompts(ctx, qry, ["the red circle"]).prompts
        got = exported.seg_prompts(ctx, qry, ["the red circle"]).prompts
    assert torch.allclose(want, got, atol=1e-4)


def test_adapter_recipe_exports_the_lora_as_a_task_adapter_beside_the_unchanged_base(tmp_path: Path,
                                                                                     data_root: Path):
    from glus_ros.inference import load_model
    from glus_ros.model.task_adapter import COUNTING

    start = load_model("tiny").eval()
    adapter = {"task": COUNTING, "dense": ["seg_projection"]}
    cfg = config_from_dict(recipe(data_root, trainable=["llm_lora"], adapter=adapter,
                                  optim={"max_steps": 2, "lr": 1e-2}, aux={"point": 0.0, "attributes": 0.0}))
    trainer = Trainer(cfg, output_dir=tmp_path / "adapter", progress=False)
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.module).model.eval()
    exported = load_model(tmp_path / "adapter" / "model").eval()
    assert set(exported.task_adapters) == {COUNTING}
    carried = exported.task_adapters[COUNTING].dense
    assert set(carried) == {k for k in start.state_dict() if k.startswith("seg_projection.")}
    assert not torch.equal(carried["seg_projection.0.weight"], start.seg_projection[0].weight)  # it trained
    for name, value in exported.state_dict().items():  # the base weights are the start model's, exactly
        assert torch.equal(value, start.state_dict()[name]), name
    torch.manual_seed(0)
    ctx, qry = torch.randn(1, 4, 16, 192), torch.randn(1, 4, 16, 192)
    with torch.no_grad():  # questions run the trained adapter, referring expressions the base
        trained = model.seg_prompts(ctx, qry, ["how many red circles are there?"]).prompts
        torch.testing.assert_close(exported.seg_prompts(ctx, qry, ["how many red circles are there?"]).prompts,
                                   trained, atol=1e-4, rtol=1e-4)
        assert torch.equal(exported.seg_prompts(ctx, qry, ["the red circle"]).prompts,
                           start.seg_prompts(ctx, qry, ["the red circle"]).prompts)
    # training new base weights on that model carries the adapter over unchanged (training/adapter_carry.py)
    again = config_from_dict(recipe(data_root, model=str(tmp_path / "adapter" / "model"), trainable=["projections"],
                                    optim={"max_steps": 1}, aux={"point": 0.0, "attributes": 0.0}))
    Trainer(again, output_dir=tmp_path / "again", progress=False).train()
    assert set(load_model(tmp_path / "again" / "model").task_adapters) == {COUNTING}
    for bad, message in (({"trainable": ["llm_lora", "projections"]}, "trainable must be \\[llm_lora\\]"),
                         ({"adapter": {"task": "dancing"}}, "not a task"),
                         ({"adapter": {"task": COUNTING, "dense": ["mask_decoder"]}}, "may name only"),
                         ({"adapter": {"task": COUNTING, "extra": 1}}, "extra")):
        with pytest.raises(ValueError, match=message):
            config_from_dict(recipe(data_root, **{"trainable": ["llm_lora"], "adapter": adapter, **bad}))


def test_short_training_improves_loss_and_j_and_f_over_the_untrained_model(tmp_path: Path):
    """One video, one expression, 20 steps: the model must learn that object (measured J&F goes up)."""
    root = tmp_path / "data"
    write_split(root, "train", 1, seed=3)
    meta_path = root / "train" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    video = next(iter(meta["videos"].values()))
    video["expressions"] = dict(list(video["expressions"].items())[:1])
    meta_path.write_text(json.dumps(meta))
    spec = {"kind": "synth", "root": str(root), "split": "train"}
    cfg = config_from_dict(recipe(root, datasets=[spec], samples_per_epoch=8, aux={"point": 0.0, "attributes": 0.0},
                                  optim={"max_steps": 20, "batch_size": 2, "grad_accum": 1, "warmup_steps": 3,
                                         "lr": 2e-3},
                                  save_every=100, eval={"dataset": spec}))
    trainer = Trainer(cfg, output_dir=tmp_path / "run", progress=False)
    before = trainer.evaluate()
    result = trainer.train()
    after = result.evals[-1]
    losses = [row["total"] for row in result.history]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    assert after["j_and_f"] > before["j_and_f"] + 0.15, (before, after)
    assert (tmp_path / "run" / "eval.csv").is_file()


def test_train_command_runs_a_recipe_and_reports_errors(tmp_path: Path, data_root: Path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(data_root, optim={"max_steps": 1, "grad_accum": 1})))
    assert cli_main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "model" / WEIGHTS_FILE).is_file()
    assert "stopped at step 1" in capsys.readouterr().out
    assert cli_main(["train", "--config", str(path), "-o", "optim.lr=-1", "--no-progress"]) == 2
    assert "optim.lr must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("overrides", [
    {"memory": {"enabled": False}, "sampling": {"query_in_prompt": False}},   # global-only
    {"memory": {"enabled": False}, "sampling": {"num_context": 0}},           # local-only
])
def test_ablation_variants_train(tmp_path: Path, data_root: Path, overrides: dict):
    cfg = config_from_dict(recipe(data_root, model_overrides=overrides, optim={"max_steps": 1, "grad_accum": 1}))
    result = Trainer(cfg, output_dir=tmp_path / "run", progress=False).train()
    assert torch.isfinite(torch.tensor(result.history[0]["total"]))
    assert "query_in_prompt" in (tmp_path / "run" / "model" / "config.yaml").read_text()


def test_global_only_model_ignores_query_frames_and_local_only_sees_them():
    from glus_ros.inference import load_model

    torch.manual_seed(0)
    ctx, q1, q2 = torch.randn(1, 4, 16, 192), torch.randn(1, 4, 16, 192), torch.randn(1, 4, 16, 192)
    with torch.no_grad():
        global_only = load_model("tiny", overrides={"sampling": {"query_in_prompt": False}})
        a = global_only.seg_prompts(ctx, q1, ["the red circle"]).prompts
        b = global_only.seg_prompts(ctx, q2, ["the red circle"]).prompts
        assert torch.equal(a, b)
        assert not torch.allclose(a[:, 0], a[:, 1])  # still one distinct [SEG] per query frame
        full = load_model("tiny")
        assert not torch.allclose(full.seg_prompts(ctx, q1, ["x"]).prompts, full.seg_prompts(ctx, q2, ["x"]).prompts)


def test_key_frame_stage_adds_a_selector_that_eval_can_use(tmp_path: Path, data_root: Path, capsys):
    cfg = config_from_dict(recipe(data_root, optim={"max_steps": 1, "grad_accum": 1},
                                  key_frame={"enabled": True, "expressions": 3, "epochs": 2}))
    result = Trainer(cfg, output_dir=tmp_path / "run", progress=False).train()
    assert result.key_frame is not None and result.key_frame["examples"] == 3
    assert 0.0 <= result.key_frame["picked_iou"] <= result.key_frame["oracle_iou"] <= 1.0
    model_dir = tmp_path / "run" / "model"
    assert "key_frame:" in (model_dir / "config.yaml").read_text()
    code = cli_main(["eval", "--model", str(model_dir), "--data", str(data_root), "--split", "valid",
                     "--key-frame", "--out", str(tmp_path / "pred")])
    assert code == 0, capsys.readouterr().err
    assert "J&F:" in capsys.readouterr().out


def test_pointing_recipe_trains_point_head_and_point_prompted_masks(tmp_path: Path, data_root: Path):
    """Per-object point labels reach the batch; the point-head and point-prompted mask losses go down."""
    cfg = config_from_dict(recipe(
        data_root, model_overrides={"points": {}}, samples_per_epoch=2, aux={"point": 0.0, "attributes": 0.0},
        trainable=["points", "mask_decoder", "prompt_encoder"], points={"weight": 1.0, "mask_weight": 1.0},
        optim={"max_steps": 20, "grad_accum": 1, "batch_size": 2, "lr": 3e-3, "warmup_steps": 0}, save_every=100))
    trainer = Trainer(cfg, output_dir=tmp_path / "run", progress=False)
    sample = trainer.dataset[0]
    masks = sample.query_masks
    assert sample.query_points is not None and len(sample.query_points) == masks.shape[0]
    for frame_mask, points in zip(masks, sample.query_points, strict=True):
        h, w = frame_mask.shape
        for x, y in points:  # every label lies on the referred objects
            assert frame_mask[min(int(y * h), h - 1), min(int(x * w), w - 1)]
        assert bool(points) == bool(frame_mask.any())
    history = trainer.train().history
    for term in ("points", "point_masks"):
        first, last = history[0][term], sum(r[term] for r in history[-3:]) / 3
        assert last < 0.8 * first, (term, first, last)
    assert "points:" in (tmp_path / "run" / "model" / "config.yaml").read_text()


def test_counting_questions_are_a_training_source(tmp_path: Path, data_root: Path):
    from glus_ros.data.grounding import load_grounding

    spec = {"kind": "synth_count", "root": str(data_root), "split": "train"}
    cfg = config_from_dict(recipe(data_root, datasets=[spec], optim={"max_steps": 1, "grad_accum": 1}))
    trainer = Trainer(cfg, output_dir=tmp_path / "run", progress=False)
    questions = [q for g in load_grounding(data_root / "train").values() for q in g.questions]
    inner = trainer.dataset.datasets[0]
    assert len(inner) == len(questions) and all(e.text.startswith("how many") for e in inner.reader.expressions())
    zero = next(i for i, e in enumerate(inner.reader.expressions()) if not e.obj_ids)
    assert not inner[zero].query_masks.any()  # "how many ... ?" with answer 0: nothing to segment
    assert np.isfinite(trainer.train().history[0]["total"])


def test_an_identity_module_left_frozen_is_named_in_a_warning(tmp_path: Path, data_root: Path, caplog):
    """`temporal_module: true` by override without 'temporal' in trainable would train nothing of it."""
    frozen = config_from_dict(recipe(data_root, model_overrides={"vlm": {"temporal_module": True}}), "r.yaml")
    with caplog.at_level("WARNING", logger="glus_ros.training.trainer"):
        trainer = Trainer(frozen, output_dir=tmp_path / "frozen", progress=False)
    assert "'temporal' module but 'trainable' does not list it" in caplog.text
    module = trainer.accelerator.unwrap_model(trainer.module).model
    assert not any(p.requires_grad for p in module.vlm.temporal.parameters())
    caplog.clear()
    groups = [*load_config("tiny").trainable, "temporal"]
    listed = config_from_dict(recipe(data_root, model_overrides={"vlm": {"temporal_module": True}}, trainable=groups),
                              "r.yaml")
    with caplog.at_level("WARNING", logger="glus_ros.training.trainer"):
        trainer = Trainer(listed, output_dir=tmp_path / "listed", progress=False)
    assert "does not list it" not in caplog.text
    module = trainer.accelerator.unwrap_model(trainer.module).model
    assert all(p.requires_grad for p in module.vlm.temporal.parameters())


def test_anchor_and_motion_terms_need_their_modules_and_synthetic_data(tmp_path: Path, data_root: Path):
    spatial = {"vlm": {"grounding_map": True, "grounding_spatial": True, "grounding_motion": 4}}
    one_step = {"max_steps": 1, "grad_accum": 1, "batch_size": 2}
    cfg = config_from_dict(recipe(data_root, model_overrides=spatial, aux={"grounding_anchor": 1.0, "motion": 1.0},
                                  optim=one_step))
    trainer = Trainer(cfg, output_dir=tmp_path / "run", progress=False)
    inner = trainer.dataset.datasets[0]
    relations = [i for i, e in enumerate(inner.reader.expressions()) if inner.reference_cells.reference(e) is not None]
    assert relations and inner[relations[0]].reference_cells.any()
    assert inner[0].motion_cells.shape == (4, 4, 7)
    row = trainer.train().history[0]
    assert np.isfinite(row["grounding_anchor"]) and row["motion"] > 0
    with pytest.raises(ValueError, match=r"needs vlm\.grounding_motion"):
        Trainer(config_from_dict(recipe(data_root, aux={"motion": 1.0})), output_dir=tmp_path / "m")
    with pytest.raises(ValueError, match=r"needs vlm\.grounding_spatial"):
        Trainer(config_from_dict(recipe(data_root, aux={"grounding_anchor": 1.0})), output_dir=tmp_path / "a")
    with pytest.raises(ValueError, match=r"needs vlm\.grounding_spatial"):
        Trainer(config_from_dict(recipe(data_root, aux={"grounding_anchor": 1.0})), output_dir=tmp_path / "a")
    mevis = [{"kind": "mevis", "root": str(data_root), "split": "train"}]
    with pytest.raises(ValueError, match="needs a synthetic dataset"):
        Trainer(config_from_dict(recipe(data_root, datasets=mevis, model_overrides=spatial,
                                        aux={"grounding_anchor": 1.0})), output_dir=tmp_path / "b")


def test_every_recipe_in_training_loads_and_validates():
    """Every recipe shipped (training/*.yaml and training/experiments/*.yaml) loads without error."""
    found = sorted((REPO / "training").glob("*.yaml")) + sorted(EXPERIMENTS.glob("*.yaml"))
    assert len(found) >= 20 and (REPO / "training" / "robot_bags.yaml") in found
    for path in found:
        cfg = load_train_config(path)
        assert cfg.name == path.stem, path


def test_recipes_compose_with_base_as_overrides_merge(tmp_path: Path, data_root: Path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(recipe(data_root, name="base_name")))
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "../base.yaml", "optim": {"lr": 5e-4}, "aux": {"point": 0.0}}))
    composed = load_train_config(child)
    overridden = load_train_config(base, ["optim.lr=5e-4", "aux.point=0.0"])
    assert composed.name == "child" and overridden.name == "base_name"
    assert {**composed.to_dict(), "name": None} == {**overridden.to_dict(), "name": None}
    assert load_train_config(child, ["optim.max_steps=9"]).optim.max_steps == 9
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="form a loop"):
        load_train_config(loop)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_a_value_of_the_wrong_type_is_one_error_naming_the_key(tmp_path: Path, data_root: Path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(data_root)))
    assert load_train_config(path, ["optim.max_steps=1e3"]).optim.max_steps == 1000
    for override, key in (("optim.max_steps=abc", "max_steps"), ("optim.batch_size=1.5", "batch_size"),
                          ("save_every=often", "save_every")):
        assert cli_main(["train", "--config", str(path), "-o", override, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{key} must be an integer" in err and "Traceback" not in err, err


def test_a_recipe_asking_for_labels_the_data_lacks_says_so_before_loading_a_model(tmp_path: Path, data_root: Path):
    mevis = [{"kind": "mevis", "root": str(data_root), "split": "train"}]
    synth = {"kind": "synth", "root": str(data_root), "split": "train"}
    for aux, term in (({"grounding_anchor": 1.0}, "aux.grounding_anchor"), ({"attributes": 1.0}, "aux.attributes"),
                      ({"cells": 1.0}, "aux.cells")):
        with pytest.raises(ValueError, match=term.replace(".", r"\.")):
            config_from_dict(recipe(data_root, datasets=mevis, aux={"attributes": 0.0, **aux}), "r.yaml")
    with pytest.raises(ValueError, match="cell labels for every sample"):  # mixed: mevis samples have none
        config_from_dict(recipe(data_root, datasets=[synth, *mevis], aux={"cells": 1.0}), "r.yaml")
    config_from_dict(recipe(data_root, datasets=[synth, *mevis], aux={"attributes": 1.0}), "r.yaml")
