"""The vision pre-training stage (training/vision_pretrain.py) on a real tiny model and generated videos."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import glus_ros.training.vision_pretrain as vision_pretrain_module
from glus_ros.data.shapes import SHAPES
from glus_ros.data.synth import write_split
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.inference import load_model
from glus_ros.training.aux_heads import COLOUR_NAMES, IGNORE, AuxHeads, SynthCellLabels
from glus_ros.training.config import VisionPretrainSpec, config_from_dict
from glus_ros.training.trainer import VISION_DIR, WEIGHTS_FILE, Trainer
from glus_ros.training.vision_pretrain import (
    cell_scores,
    load_vision_state,
    pretrain_vision,
    stage_parameters,
    vision_state,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_vision")
    write_split(root, "train", 6, seed=21)
    return root


def _labels(model, split_dir: Path) -> SynthCellLabels:
    return SynthCellLabels(split_dir, round(model.cfg.vlm.tokens_per_frame**0.5))


def test_cell_scores_count_only_cells_that_hold_an_object():
    heads = AuxHeads(4, cells=True)
    split = len(COLOUR_NAMES) + 1
    with torch.no_grad():
        heads.cells.weight.zero_()
        heads.cells.bias.zero_()
        heads.cells.bias[1] = 5.0          # always colour 1
        heads.cells.bias[split + 2] = 5.0  # always shape 2
    labels = torch.full((1, 2, 2, 2), IGNORE)
    labels[0, 0, 0] = torch.tensor([1, 0])                     # colour right, shape wrong
    labels[0, 0, 1] = torch.tensor([2, 2])                     # colour wrong, shape right
    labels[0, 1, 0] = torch.tensor([len(COLOUR_NAMES), 3])     # no object: not scored
    scores = cell_scores(heads, torch.zeros(1, 4, 4), labels)
    colour, shape = scores["colour"], scores["shape"]
    assert (colour, shape) == (0.5, 0.5)


def test_pretraining_fits_the_cells_and_touches_only_the_vision_side(data_root: Path):
    model = load_model("tiny")
    reader = MevisDataset(data_root, "train")
    llm_before = {n: p.clone() for n, p in model.vlm.language_model.named_parameters()}
    sam_before = {n: p.clone() for n, p in model.sam.named_parameters()}
    vision_before = vision_state(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    spec = VisionPretrainSpec(enabled=True, steps=120, batch_size=8, lr=3e-3, held_out=1, eval_every=30,
                              eval_frames=16)
    rows = pretrain_vision(model, reader, _labels(model, data_root / "train"), spec, seed=0, progress=False)
    assert [r["step"] for r in rows] == [30, 60, 90, 120]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], rows
    assert all(0.0 <= r["held_out_colour"] <= 1.0 and 0.0 <= r["held_out_shape"] <= 1.0 for r in rows)
    assert any(not torch.equal(vision_before[n], v) for n, v in vision_state(model).items())
    assert all(torch.equal(llm_before[n], p) for n, p in model.vlm.language_model.named_parameters())
    assert all(torch.equal(sam_before[n], p) for n, p in model.sam.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_the_stage_ignores_the_visual_position_option(data_root: Path):
    """The cell code is an LLM-input detail: the stage (and its cache) is the same with the option on or off."""
    reader = MevisDataset(data_root, "train")
    spec = VisionPretrainSpec(enabled=True, steps=6, batch_size=4, lr=3e-3, held_out=1, eval_every=3, eval_frames=4)
    states = []
    for overrides in ({}, {"vlm": {"visual_position": True}}):
        model = load_model("tiny", overrides=overrides)
        rows = pretrain_vision(model, reader, _labels(model, data_root / "train"), spec, seed=0, progress=False)
        states.append((rows, vision_state(model)))
    (rows_off, off), (rows_on, on) = states
    assert rows_off == rows_on
    assert off.keys() == on.keys() and all(torch.equal(off[n], on[n]) for n in off)


def test_held_out_must_leave_training_videos_and_frames_must_fit(data_root: Path):
    model = load_model("tiny")
    reader = MevisDataset(data_root, "train")
    with pytest.raises(ValueError, match="held_out 6 leaves no training videos"):
        pretrain_vision(model, reader, _labels(model, data_root / "train"),
                        VisionPretrainSpec(enabled=True, steps=1, held_out=6), progress=False)
    other = load_model("tiny", overrides={"vlm": {"image_size": 128, "vision": {"patch_size": 16}}})
    with pytest.raises(ValueError, match="does not fit"):
        load_vision_state(other, vision_state(model))
    state = vision_state(model)
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="missing"):
        load_vision_state(model, state)


def test_corrupt_frames_are_skipped_and_counted_or_raised(tmp_path: Path):
    write_split(tmp_path, "train", 3, seed=22)
    reader = MevisDataset(tmp_path, "train")
    broken = reader.videos()[0]
    for path in (tmp_path / "train" / "JPEGImages" / broken).glob("*.jpg"):
        path.write_bytes(b"not a jpeg")
    model = load_model("tiny")
    spec = VisionPretrainSpec(enabled=True, steps=4, batch_size=8, held_out=1, eval_every=4, eval_frames=4)
    rows = pretrain_vision(model, reader, _labels(model, tmp_path / "train"), spec, progress=False)
    assert rows[-1]["skipped"] > 0
    with pytest.raises(ValueError, match=broken):
        pretrain_vision(model, reader, _labels(model, tmp_path / "train"), spec, on_error="raise", progress=False)


def _recipe(data_root: Path, **vision: object) -> dict:
    return {
        "name": "vision",
        "model": "tiny",
        "datasets": [{"kind": "synth", "root": str(data_root), "split": "train"}],
        "samples_per_epoch": 4,
        "optim": {"lr": 1e-3, "warmup_steps": 0, "batch_size": 1, "grad_accum": 1, "max_steps": 1},
        "vision_pretrain": {"enabled": True, "steps": 6, "batch_size": 2, "held_out": 1, "eval_every": 3,
                            "eval_frames": 4, **vision},
    }


def test_trainer_runs_the_stage_once_and_reuses_its_weights(data_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    cfg = config_from_dict(_recipe(data_root), "vision.yaml")
    out = tmp_path / "run"
    first = Trainer(cfg, output_dir=out, progress=False)
    cache = out / VISION_DIR / WEIGHTS_FILE
    assert cache.is_file()
    with (out / VISION_DIR / "metrics.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [3, 6]
    assert [r["step"] for r in first.vision_pretrain] == [3, 6]
    saved = load_file(str(cache))
    assert all(torch.equal(saved[n], p.detach()) for n, p in stage_parameters(first.model).items())
    assert any(not torch.equal(saved[n], p) for n, p in vision_state(load_model("tiny")).items())

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached vision stage ran again")

    monkeypatch.setattr(vision_pretrain_module, "pretrain_vision", must_not_run)
    again = Trainer(cfg, output_dir=out, progress=False)
    assert again.vision_pretrain == []  # loaded, not run
    # same starting point whether the stage ran or came from the cache: the main stage's run is reproducible
    a, b = first._trainable_state(), again._trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    result = again.train()
    assert result.steps == 1 and result.model_dir is not None and (result.model_dir / "config.yaml").is_file()


def test_recipe_errors_of_the_stage(data_root: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="vision_pretrain: steps must be >= 1"):
        config_from_dict(_recipe(data_root, steps=0), "vision.yaml")
    with pytest.raises(ValueError, match=r"vision_pretrain: unknown keys \['step'\]"):
        config_from_dict(_recipe(data_root, step=3), "vision.yaml")
    (tmp_path / "mevis" / "train").mkdir(parents=True)
    raw = _recipe(data_root)
    raw["datasets"] = [{"kind": "mevis", "root": str(tmp_path / "mevis"), "split": "train"}]
    with pytest.raises(ValueError, match="needs a synthetic dataset"):
        Trainer(config_from_dict(raw, "vision.yaml"), output_dir=tmp_path / "run", progress=False)


def test_cell_scores_count_offsets_within_one_bin():
    heads = AuxHeads(4, cells=True, offset_bins=4)
    shapes = len(COLOUR_NAMES) + 1 + len(SHAPES) + 1
    with torch.no_grad():
        heads.cells.weight.zero_()
        heads.cells.bias.zero_()
        heads.cells.bias[shapes + 2] = 5.0        # x bin 2
        heads.cells.bias[shapes + 4 + 0] = 5.0    # y bin 0
    labels = torch.full((1, 2, 2, 4), IGNORE)
    labels[0, 0, 0] = torch.tensor([1, 0, 3, 1])                  # within one bin on both axes
    labels[0, 0, 1] = torch.tensor([2, 2, 0, 0])                  # x two bins off
    labels[0, 1, 0] = torch.tensor([len(COLOUR_NAMES), 3, IGNORE, IGNORE])   # no object: not scored
    scores = cell_scores(heads, torch.zeros(1, 4, 4), labels)
    assert scores["offset"] == 0.5 and set(scores) == {"colour", "shape", "offset"}
    assert "offset" not in cell_scores(AuxHeads(4, cells=True), torch.zeros(1, 4, 4), labels)
