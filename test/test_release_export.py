"""Exporting a LoRA fine-tuned release (full release, small adapter) and loading it back, in Python and the CLI.

Fixture ``c`` (a tiny release written by the official code, every tensor trained-like) stands in for GLUS-S.
It gets LoRA on q_proj / v_proj (as training does) with every factor set to seeded random values, and its
trained heads (text_hidden_fcs, mask decoder, lm_head, embed_tokens, mm_projector) moved away from the release;
the window loop over the first frames gives the reference tokens, [SEG] prompts and masks. Both exports loaded
by ``load_official_model`` must give them again: prompts to 1e-5, masks exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from glus_ros.cli import main
from glus_ros.core.loop import LoopTrace, WindowLoop
from glus_ros.inference import load_model
from glus_ros.model.checkpoints import CheckpointError
from glus_ros.model.config import deep_update, read_yaml_mapping
from glus_ros.model.release_export import (
    ADAPTER_CONFIG,
    ADAPTER_INFO,
    ADAPTER_WEIGHTS,
    DEFAULT_HEADS,
    HEADS,
    HEADS_FILE,
    load_adapter,
    official_key,
    save_adapter,
    save_release,
)
from glus_ros.training.config import LoraSpec
from glus_ros.training.lora import add_lora, has_lora
from glus_ros.video_io import read_video

FIXTURE = Path(__file__).parent / "fixtures" / "glus_official" / "c"
RELEASE = FIXTURE / "checkpoint"
NUM_FRAMES = 6
ATOL = 1e-5
LORA = LoraSpec(rank=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"])
SEG = 363  # [SEG] in the fixture's added_tokens.json
LORA_TARGETS = [f"vlm.llava.model.language_model.layers.{i}.self_attn.{p}.weight" for i in (0, 1)
                for p in ("q_proj", "v_proj")]


def overrides(extra: dict | None = None) -> dict:
    raw = read_yaml_mapping(FIXTURE / "glus_override.yaml")
    return deep_update(raw, extra) if extra else raw


def load(checkpoint: Path = RELEASE, extra: dict | None = None, **kw):
    return load_model("glus-s", checkpoint, vision_tower=FIXTURE / "clip", overrides=overrides(extra), **kw)


@dataclass
class Run:
    tokens: list[int]
    prompts: list[torch.Tensor | None]
    masks: np.ndarray


def run(model, frames, expression) -> Run:
    trace = LoopTrace()
    result = WindowLoop(model).segment(frames, expression, 0, trace=trace)
    return Run([s.token for s in trace.steps], [s.prompt for s in trace.steps], result.masks)


def prompt_gap(a: Run, b: Run) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.prompts, b.prompts, strict=True)
               if x is not None and y is not None)


def assert_same(got: Run, want: Run) -> None:
    assert got.tokens == want.tokens
    for t, (a, b) in enumerate(zip(got.prompts, want.prompts, strict=True)):
        assert (a is None) == (b is None), f"frame {t}"
        if a is not None:
            assert float((a - b).abs().max()) <= ATOL, f"frame {t}: prompt"
    assert np.array_equal(got.masks, want.masks)


def fine_tune_like(model, seed: int = 0) -> None:
    """LoRA as training injects it, every factor and head tensor moved to seeded random values."""
    add_lora(model.vlm.language_model, LORA)
    heads = tuple(p for h in DEFAULT_HEADS for p in HEADS[h])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            elif name.startswith(heads):
                scale = float(param.std()) if param.numel() > 1 else 1.0
                param.add_(torch.randn(param.shape, generator=generator) * 0.1 * scale)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    frames, _, _ = read_video(FIXTURE / "frames", NUM_FRAMES)
    expression = json.loads((FIXTURE / "expected_start0.json").read_text())["expression"]
    model = load()
    base = run(model, frames, expression)
    fine_tune_like(model)
    reference = run(model, frames, expression)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("export")
    release = save_release(model, folder / "release", RELEASE, max_shard_bytes=1_500_000)
    adapter = save_adapter(model, folder / "adapter", RELEASE)
    return SimpleNamespace(model=model, frames=frames, expression=expression, base=base, reference=reference,
                           before=before, release=release, adapter=adapter, folder=folder)


def test_the_fine_tuned_reference_grounds_and_differs_from_the_release(tuned):
    ref = tuned.reference
    assert sum(t == SEG for t in ref.tokens) >= NUM_FRAMES - 1 and 0.05 < ref.masks.mean() < 0.95
    assert prompt_gap(ref, tuned.base) > 0.1 and not np.array_equal(ref.masks, tuned.base.masks)
    from peft.tuners.lora import LoraLayer

    lora = [m for m in tuned.model.modules() if isinstance(m, LoraLayer)]
    assert len(lora) == len(LORA_TARGETS)
    try:  # the LoRA part alone moves the prompts too, so a wrong merge shows in the comparisons below
        for layer in lora:
            layer.scaling["default"] = 0.0
        without = run(tuned.model, tuned.frames, tuned.expression)
    finally:
        for layer in lora:
            layer.scaling["default"] = LORA.alpha / LORA.rank
    assert prompt_gap(ref, without) > 1e-2


def test_saved_release_loads_back_to_the_same_prompts_and_masks(tuned):
    assert has_lora(tuned.model), "the caller's model keeps its LoRA layers"
    after = tuned.model.state_dict()
    assert after.keys() == tuned.before.keys() and all(torch.equal(after[k], v) for k, v in tuned.before.items())
    index = json.loads((tuned.release / "model.safetensors.index.json").read_text())["weight_map"]
    source = json.loads((RELEASE / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == set(source), "the release layout: every official key, and only those"
    assert len(set(index.values())) > 1 and all((tuned.release / f).is_file() for f in index.values())
    assert json.loads((tuned.release / "config.json").read_text()) == json.loads((RELEASE / "config.json").read_text())
    for name in ("tokenizer.model", "added_tokens.json", "tokenizer_config.json", "special_tokens_map.json",
                 "generation_config.json"):
        assert (tuned.release / name).read_bytes() == (RELEASE / name).read_bytes(), name
    stored = {k: v for f in sorted(set(index.values())) for k, v in load_file(str(tuned.release / f)).items()}
    gamma = "model.visual_model.memory_encoder.fuser.layers.0.gamma"  # what the model holds (1e-6), official name
    assert torch.equal(stored[gamma], tuned.model.sam.sam.memory_encoder.fuser.layers[0].gamma.detach())
    assert not any("vision_tower" in k for k in stored)

    reloaded = load(tuned.release)
    assert_same(run(reloaded, tuned.frames, tuned.expression), tuned.reference)
    assert not has_lora(reloaded)


def test_adapter_applied_to_the_release_gives_the_same_prompts_and_masks(tuned):
    model = load(adapter=tuned.adapter)
    assert_same(run(model, tuned.frames, tuned.expression), tuned.reference)
    report = model.adapter_report
    assert sorted(report.merged) == sorted(LORA_TARGETS) and report.scale == LORA.alpha / LORA.rank
    heads = [k for k in tuned.before if k.startswith(tuple(p for h in DEFAULT_HEADS for p in HEADS[h]))]
    assert sorted(report.assigned) == sorted(heads)
    assert report.release == str(RELEASE.resolve())

    by_config = load(extra={"official": {"adapter": str(tuned.adapter)}})  # the model-config key does the same
    assert_same(run(by_config, tuned.frames, tuned.expression), tuned.reference)


def test_adapter_is_peft_format_and_small(tuned):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((tuned.adapter / ADAPTER_CONFIG).read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"], config["bias"], config["task_type"]) == (
        8, 16, 0.05, "none", "CAUSAL_LM")
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(RELEASE.resolve()) and config["peft_type"] == "LORA"
    factors = load_file(str(tuned.adapter / ADAPTER_WEIGHTS))
    assert set(factors) == {f"base_model.model.model.layers.{i}.self_attn.{p}.lora_{ab}.weight"
                            for i in (0, 1) for p in ("q_proj", "v_proj") for ab in "AB"}
    info = json.loads((tuned.adapter / ADAPTER_INFO).read_text())
    assert info["release"] == str(RELEASE.resolve()) and list(info["heads"]) == list(DEFAULT_HEADS)
    assert set(load_file(str(tuned.adapter / HEADS_FILE))) == {official_key(k) for k in tuned.before if k.startswith(
        tuple(p for h in DEFAULT_HEADS for p in HEADS[h]))}

    # peft itself reads it onto a LLaMA with GLUSForCausalLM's module paths (model.layers.N...)
    text = overrides()["vlm"]["text"]
    llama = LlamaForCausalLM(LlamaConfig(**text))
    lora_config = LoraConfig.from_pretrained(str(tuned.adapter))
    lora_config.base_model_name_or_path = None  # (peft warns when the model it wraps is another one)
    peft_model = get_peft_model(llama, lora_config)
    result = set_peft_model_state_dict(peft_model, load_peft_weights(str(tuned.adapter)))
    assert not result.unexpected_keys
    lora = tuned.model.vlm.language_model.layers[1].self_attn.v_proj
    assert torch.equal(peft_model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight,
                       lora.lora_B["default"].weight)

    def size(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.iterdir())

    # the tiny fixture's heads (SAM 2 mask decoder, embeddings) are most of its size; for GLUS-S the LLM is
    assert size(tuned.adapter) < 0.6 * size(tuned.release)
    lora_only = save_adapter(tuned.model, tuned.folder / "lora_only", RELEASE, heads=())
    assert not (lora_only / HEADS_FILE).exists() and size(lora_only) < 0.01 * size(tuned.release)
    assert_same(run(load(adapter=lora_only), tuned.frames, tuned.expression),
                run(_release_with_heads_of(tuned), tuned.frames, tuned.expression))


def _release_with_heads_of(tuned):
    """The release with the tuned model's LoRA merged (via the full export) but its original heads."""
    model = load(tuned.release)
    original = load()
    heads = tuple(p for h in DEFAULT_HEADS for p in HEADS[h])
    with torch.no_grad():
        for (name, param), (_, orig) in zip(model.named_parameters(), original.named_parameters(), strict=True):
            if name.startswith(heads):
                param.copy_(orig)
    return model


# --- errors ----------------------------------------------------------------------------------------------------
def _edit_json(name: str, **changes):
    def edit(folder: Path) -> None:
        raw = json.loads((folder / name).read_text())
        raw.update(changes)
        (folder / name).write_text(json.dumps(raw))
    return edit


def _edit_tensors(name: str, change):
    def edit(folder: Path) -> None:
        tensors = load_file(str(folder / name))
        save_file(change(tensors), str(folder / name))
    return edit


def _rename(old: str, new: str):
    return lambda t: {k.replace(old, new): v for k, v in t.items()}


BROKEN = {
    "no adapter_config.json": (lambda f: (f / ADAPTER_CONFIG).unlink(), FileNotFoundError, r"no adapter_config\.json"),
    "no adapter_model": (lambda f: (f / ADAPTER_WEIGHTS).unlink(), FileNotFoundError,
                         r"no adapter_model\.safetensors"),
    "no trained heads": (lambda f: (f / HEADS_FILE).unlink(), FileNotFoundError, r"no trained_heads\.safetensors"),
    "LoRA key without a layer": (_edit_tensors(ADAPTER_WEIGHTS, _rename("layers.1.", "layers.7.")), CheckpointError,
                                 r"adapter_model\.safetensors: model\.layers\.7\.self_attn\.q_proj\.lora_A\.weight "
                                 r"matches no layer"),
    "lora_A without lora_B": (_edit_tensors(ADAPTER_WEIGHTS, lambda t: {
        k: v for k, v in t.items() if "layers.0.self_attn.q_proj.lora_B" not in k}), CheckpointError,
        r"adapter_model\.safetensors: model\.layers\.0\.self_attn\.q_proj has lora_A but no lora_B"),
    "rank differs from the config": (_edit_json(ADAPTER_CONFIG, r=4), CheckpointError,
                                     r"adapter_model\.safetensors: model\.layers\.0\.self_attn\.q_proj: "
                                     r"lora_A \(8, 32\).*do not fit r 4"),
    "factor shape": (_edit_tensors(ADAPTER_WEIGHTS, lambda t: {k: v[:, :16].contiguous() if k.endswith(
        "layers.1.self_attn.v_proj.lora_A.weight") else v for k, v in t.items()}), CheckpointError,
        r"adapter_model\.safetensors: model\.layers\.1\.self_attn\.v_proj: lora_A \(8, 16\)"),
    "head shape": (_edit_tensors(HEADS_FILE, lambda t: {**t, "lm_head.weight": t["lm_head.weight"][:-1]}),
                   CheckpointError, r"trained_heads\.safetensors: lm_head\.weight \(363, 32\) vs model \(364, 32\)"),
    "unknown head key": (_edit_tensors(HEADS_FILE, _rename("model.text_hidden_fcs.0.0.", "model.text_hidden_fcs.1.0.")),
                         CheckpointError, r"trained_heads\.safetensors: model\.text_hidden_fcs\.1\.0\.\w+ matches no "),
    "use_rslora": (_edit_json(ADAPTER_CONFIG, use_rslora=True), CheckpointError,
                   r"adapter_config\.json: use_rslora True is not supported"),
    "use_dora": (_edit_json(ADAPTER_CONFIG, use_dora=True), CheckpointError,
                 r"adapter_config\.json: use_dora True is not supported"),
    "rank_pattern": (_edit_json(ADAPTER_CONFIG, rank_pattern={"q_proj": 4}), CheckpointError,
                     r"adapter_config\.json: rank_pattern .* is not supported"),
    "lora bias": (_edit_json(ADAPTER_CONFIG, bias="all"), CheckpointError,
                  r"adapter_config\.json: bias 'all' is not supported"),
    "not LoRA": (_edit_json(ADAPTER_CONFIG, peft_type="IA3"), CheckpointError,
                 r"adapter_config\.json: peft_type 'IA3'"),
}


@pytest.fixture(scope="module")
def plain_release():
    model = load()
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_adapter_is_one_error_naming_file_and_key(case, tuned, plain_release, tmp_path):
    breaks, error, match = BROKEN[case]
    folder = tmp_path / "adapter"
    shutil.copytree(tuned.adapter, folder)
    breaks(folder)
    model, state = plain_release
    with pytest.raises(error, match=match) as exc:
        load_adapter(model, folder)
    assert "\n" not in str(exc.value)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items()), "a failed load changes nothing"


def test_adapter_folder_errors(tuned, plain_release, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"adapter folder .*missing does not exist"):
        load_adapter(plain_release[0], tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"adapter folder .*missing does not exist"):
        load(adapter=tmp_path / "missing")
    with pytest.raises(ValueError, match="peft LoRA layers"):
        load_adapter(tuned.model, tuned.adapter)
    with pytest.raises(ValueError, match="not a release"):
        load_model("tiny", adapter=tuned.adapter)


def test_save_release_refuses_the_source_and_an_earlier_export(tuned, tmp_path):
    with pytest.raises(ValueError, match="must not be the source release"):
        save_release(tuned.model, RELEASE, RELEASE)
    save_release(tuned.model, tmp_path / "r", RELEASE, dtype="bf16")
    with pytest.raises(FileExistsError, match="already holds"):
        save_release(tuned.model, tmp_path / "r", RELEASE)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    (shard,) = (tmp_path / "r").glob("model-*.safetensors")  # the default shard size: one shard here
    assert shard.name == "model-00001-of-00001.safetensors"
    assert load_file(str(shard))["lm_head.weight"].dtype == torch.bfloat16
    assert load(tmp_path / "r").load_report.loaded  # a bf16 release loads (into fp32 on CPU)
    save_release(tuned.model, tmp_path / "r", RELEASE, overwrite=True)
    with pytest.raises(FileExistsError, match="already holds"):
        save_adapter(tuned.model, tuned.adapter, RELEASE)


def test_only_plain_lora_is_exported(plain_release, tmp_path):
    from peft import LoraConfig, inject_adapter_in_model

    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(plain_release[0], tmp_path / "a", RELEASE)
    for option, match in (({"use_rslora": True}, r"not alpha / r \(rsLoRA\?\)"), ({"use_dora": True}, "LoRA variant")):
        model = load()
        inject_adapter_in_model(LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"], **option),
                                model.vlm.language_model)
        with pytest.raises(ValueError, match=match):
            save_adapter(model, tmp_path / "a", RELEASE)
    with pytest.raises(ValueError, match="LoRA variant"):
        save_release(model, tmp_path / "r", RELEASE)


# --- the command line ------------------------------------------------------------------------------------------
def test_segment_cli_with_adapter_writes_the_fine_tuned_masks(tuned, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "glus_ros.cli", "segment", "--model", "glus-s", "--checkpoint", str(RELEASE),
         "--vision-tower", str(FIXTURE / "clip"), "--model-override", str(FIXTURE / "glus_override.yaml"),
         "--adapter", str(tuned.adapter), "--video", str(FIXTURE / "frames"), "--max-frames", str(NUM_FRAMES),
         "--expr", tuned.expression, "--out", str(out), "--no-overlay"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) > 0 for p in sorted(out.glob("*.png"))])
    assert np.array_equal(written, tuned.reference.masks)


def test_cli_adapter_errors_are_one_line_and_exit_code_2(tmp_path, capsys):
    weights = ["--checkpoint", str(RELEASE), "--vision-tower", str(FIXTURE / "clip"),
               "--model-override", str(FIXTURE / "glus_override.yaml")]
    assert main(["segment", "--model", "glus-s", *weights, "--adapter", str(tmp_path / "missing"),
                 "--video", str(FIXTURE / "frames"), "--max-frames", "2", "--expr", "x", "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter folder" in err[0] and "does not exist" in err[0]
