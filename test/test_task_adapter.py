"""Task adapters on the real tiny model: routing by request form, the same output as peft's merged LoRA,
mixed batches, saving/loading with the model folder, and clear errors for files that do not fit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.model.task_adapter import ADAPTERS_DIR, COUNTING, AdapterError, TaskAdapter, task_of
from glus_ros.training.config import LoraSpec
from glus_ros.training.lora import add_lora, extract_lora, merge_lora

REFERRING = "the red circle moving left"
QUESTION = "how many red circles are there?"


@pytest.fixture(scope="module")
def adapted() -> tuple[torch.nn.Module, torch.nn.Module, TaskAdapter]:
    """(base model, the same model with a random counting LoRA merged in, that LoRA as a task adapter)."""
    base = load_model("tiny").eval()
    trained = copy.deepcopy(base)
    add_lora(trained.vlm.language_model, LoraSpec(rank=4, alpha=8, dropout=0.0,
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():  # peft starts B at zero (no change): give the adapter a real effect
        for name, p in trained.vlm.language_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        trained.seg_projection[0].weight.add_(0.5)  # a head the adapter carries whole (dense)
    unmerged = copy.deepcopy(trained)
    factors, scale = extract_lora(unmerged.vlm.language_model)
    dense = {k: v for k, v in unmerged.state_dict().items() if k.startswith("seg_projection.")}
    merge_lora(trained)
    return base, trained.eval(), TaskAdapter(COUNTING, factors, scale, dense)


def prompts(model: torch.nn.Module, expressions: list[str]) -> torch.Tensor:
    torch.manual_seed(0)
    ctx, qry = torch.randn(len(expressions), 4, 16, 192), torch.randn(len(expressions), 4, 16, 192)
    with torch.no_grad():
        return model.seg_prompts(ctx, qry, expressions).prompts


def with_adapter(base: torch.nn.Module, adapter: TaskAdapter) -> torch.nn.Module:
    model = copy.deepcopy(base)
    model.task_adapters = {COUNTING: adapter}
    return model


def test_requests_route_by_their_form():
    for text in ("how many cups are there?", "How many red cubes move left?", "  how   many?", "Count the mugs",
                 "what is the number of boxes on the table?"):
        assert task_of(text) == COUNTING, text
    for text in ("the cup that many people touched", "counter on the left", "the mug", "", "many cubes"):
        assert task_of(text) is None, text


def test_adapter_reproduces_the_merged_lora_for_questions_and_leaves_referring_on_the_base(adapted):
    base, merged, adapter = adapted
    model = with_adapter(base, adapter)
    prompts(model, [REFERRING])  # (transformers adds its own hooks on a first pass)
    hooks_before = sum(len(m._forward_hooks) for m in model.vlm.language_model.modules())
    assert adapter.rank == 4 and adapter.scale == pytest.approx(2.0) and len(adapter.factors) == 3 * 4
    torch.testing.assert_close(prompts(model, [QUESTION]), prompts(merged, [QUESTION]), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(prompts(base, [QUESTION]), prompts(merged, [QUESTION]), atol=1e-3)
    assert torch.equal(prompts(model, [REFERRING]), prompts(base, [REFERRING]))
    # after the pass the hooks are gone and the dense head holds the base weights again
    assert sum(len(m._forward_hooks) for m in model.vlm.language_model.modules()) == hooks_before
    assert torch.equal(model.seg_projection[0].weight, base.seg_projection[0].weight)


def test_a_batch_mixing_questions_and_referring_expressions_matches_single_runs(adapted):
    base, _, adapter = adapted
    model = with_adapter(base, adapter)
    torch.manual_seed(0)
    ctx, qry = torch.randn(3, 4, 16, 192), torch.randn(3, 4, 16, 192)
    texts = [REFERRING, QUESTION, "the blue square"]
    with torch.no_grad():
        together = model.seg_prompts(ctx, qry, texts)
        for i, text in enumerate(texts):
            alone = model.seg_prompts(ctx[i:i + 1], qry[i:i + 1], [text])
            torch.testing.assert_close(together.prompts[i], alone.prompts[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(together.logits[i, : alone.logits.shape[1]], alone.logits[0],
                                       atol=1e-4, rtol=1e-4)


def test_adapters_travel_with_the_model_folder_in_fp32_and_fp16(tmp_path: Path, adapted):
    base, merged, adapter = adapted
    model = with_adapter(base, adapter)
    full = save_model_dir(model, tmp_path / "fp32")
    half = save_model_dir(model, tmp_path / "fp16", storage="fp16")
    assert sorted(p.name for p in (full / ADAPTERS_DIR).iterdir()) == ["counting.safetensors"]
    for folder, tol in ((full, 1e-5), (half, 2e-2)):
        loaded = load_model(folder).eval()
        assert set(loaded.task_adapters) == {COUNTING}
        assert set(loaded.state_dict()) == set(base.state_dict())  # the base key layout is untouched
        torch.testing.assert_close(prompts(loaded, [QUESTION]), prompts(merged, [QUESTION]), atol=tol, rtol=tol)
    # saving the model without adapters into the same folder leaves no stale adapter behind
    save_model_dir(base, full)
    assert load_model(full).task_adapters == {}
    assert not list((full / ADAPTERS_DIR).glob("*.safetensors"))


def test_adapter_files_that_do_not_fit_are_clear_errors(tmp_path: Path, adapted):
    base, _, adapter = adapted
    folder = save_model_dir(with_adapter(base, adapter), tmp_path / "m")
    path = folder / ADAPTERS_DIR / "counting.safetensors"
    a, b = next(iter(adapter.factors.values()))
    # a layer the LLM does not have
    TaskAdapter(COUNTING, {"layers.9.self_attn.q_proj": (a, b)}, 1.0).save(path)
    with pytest.raises(AdapterError, match=r"counting\.safetensors.*layers\.9\.self_attn\.q_proj"):
        load_model(folder)
    # a layer of the wrong width
    TaskAdapter(COUNTING, {"layers.0.self_attn.q_proj": (torch.zeros(4, 7), torch.zeros(192, 4))}, 1.0).save(path)
    with pytest.raises(AdapterError, match="maps 7 -> 192"):
        load_model(folder)
    path.write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="cannot read"):
        load_model(folder)
    adapter.save(folder / ADAPTERS_DIR / "other.safetensors")
    path.unlink()
    with pytest.raises(AdapterError, match="named for 'other'"):
        load_model(folder)
    # a replaced head weight of the wrong shape
    TaskAdapter(COUNTING, adapter.factors, 1.0, {"seg_projection.0.weight": torch.zeros(3, 3)}).save(path)
    with pytest.raises(AdapterError, match=r"seg_projection\.0\.weight' is \(3, 3\)"):
        load_model(folder)
    with pytest.raises(ValueError, match="only the weights of"):
        TaskAdapter(COUNTING, adapter.factors, 1.0, {"sam.sam.no_mem_embed": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown adapter task"):
        TaskAdapter("dancing", adapter.factors, 1.0)
    with pytest.raises(ValueError, match="not \\(rank, in\\) and \\(out, rank\\)"):
        TaskAdapter(COUNTING, {"x": (torch.zeros(4, 8), torch.zeros(8, 3))}, 1.0)
