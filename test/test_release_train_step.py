"""One training step of the released GLUS weights against the official training code.

Fixture ``train_step`` (test/fixtures/glus_official, made by the reference harness with the official GLUS code,
transformers 4.31 and peft 0.4.0) holds: a tiny MeViS-layout train split, the LoRA adapter the official model
trained with (peft's own files, every factor random), the batch the official dataset drew and collated (its draws,
input ids and labels), the pre-filled contrastive bank, and what one forward + backward of the official model on
fixture ``c``'s release gave: every loss term and the gradient norm of every trainable tensor.
LoRA dropout is 0 and the memory attention runs in eval mode in both (their dropout masks are random).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glus_ros.datasets.mevis import MevisDataset
from glus_ros.inference import load_model
from glus_ros.model.checkpoints import map_glus_keys
from glus_ros.model.config import read_yaml_mapping
from glus_ros.training.config import LoraSpec
from glus_ros.training.lora import add_lora, load_lora_factors
from glus_ros.training.losses import LossWeights
from glus_ros.training.release_batch import build_release_sample, collate_release
from glus_ros.training.release_step import ReleaseSegBank, release_losses, same_object_table

ROOT = Path(__file__).parent / "fixtures" / "glus_official"
RELEASE, FIXTURE = ROOT / "c", ROOT / "train_step"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TENSORS = load_file(str(FIXTURE / "expected.safetensors"))
WEIGHTS = LossWeights(ce=1.0, bce=2.0, dice=0.5, contrastive=0.1, temperature=0.07)


@pytest.fixture(scope="module")
def stepped():
    model = load_model("glus-s", RELEASE / "checkpoint", vision_tower=RELEASE / "clip",
                       overrides=read_yaml_mapping(RELEASE / "glus_override.yaml"))
    lora = EXPECTED["lora"]
    # the release config's trainable groups, as the trainer applies them, then LoRA
    model.apply_trainable([g for g in model.cfg.trainable if g != "llm_lora"])
    add_lora(model.vlm.language_model, LoraSpec(rank=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
                                                target_modules=["q_proj", "v_proj"]))
    assert load_lora_factors(model, FIXTURE / "adapter") == 8
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    model.train()
    model.sam.sam.memory_attention.eval()
    reader = MevisDataset(FIXTURE / "data" / "mevis", "train")
    samples = [build_release_sample(reader, s["video"], s["exp_ids"], s["context_frames"], s["query_frames"],
                                    s["question_templates"], s["answer_templates"]) for s in EXPECTED["samples"]]
    batch = collate_release(samples, model.tokenizer)
    bank = ReleaseSegBank({("mevis", v): same_object_table((v, e.exp_id, e.obj_ids) for e in reader.expressions()
                                                           if e.video == v) for v in reader.videos()})
    for entry, token in zip(EXPECTED["bank"], TENSORS["bank_tokens"], strict=True):
        _, video, exp_id = entry["str_id"].split("_", 2)
        bank.add("mevis", video, exp_id, entry["frame"], token)
    losses = release_losses(model, batch, WEIGHTS, bank, random.Random(EXPECTED["contrastive_seed"]))
    losses["total"].backward()
    return model, trainable, batch, losses


def test_the_batch_is_the_official_collate(stepped):
    _, _, batch, _ = stepped
    assert batch.offsets == EXPECTED["offset"]
    assert torch.equal(batch.input_ids, TENSORS["input_ids"])
    assert torch.equal(batch.attention_mask, TENSORS["attention_masks"])
    assert torch.equal(batch.labels, TENSORS["labels"])
    for s, sample in enumerate(batch.samples):
        assert torch.equal(sample.masks, TENSORS[f"masks.{s}"])


def test_every_loss_term_is_the_official_one(stepped):
    _, _, _, losses = stepped
    official = EXPECTED["losses"]
    ours = {"ce_loss": WEIGHTS.ce * losses["ce"], "mask_bce_loss": WEIGHTS.bce * losses["bce"],
            "mask_dice_loss": WEIGHTS.dice * losses["dice"],
            "contrastive_loss": WEIGHTS.contrastive * losses["contrastive"], "loss": losses["total"]}
    for name, value in ours.items():
        assert float(value) == pytest.approx(official[name], rel=1e-4), name


def test_the_trainable_tensors_and_their_gradients_are_the_official_ones(stepped):
    model, trainable, _, _ = stepped
    # the official names under peft: base_model.model.<GLUSForCausalLM name>
    official = {map_glus_keys({k.removeprefix("base_model.model."): None})[0].popitem()[0]: v
                for k, v in EXPECTED["grad_norms"].items()}
    assert set(trainable) == set(official)
    params = dict(model.named_parameters())
    for name, norm in official.items():
        grad = params[name].grad
        ours = 0.0 if grad is None else float(grad.norm())
        # abs: gradients that are zero in exact arithmetic (attention key biases) are float noise of ~1e-11 in both
        assert ours == pytest.approx(norm, rel=1e-3, abs=1e-7), name


def test_an_adapter_that_does_not_fit_the_lora_layers_is_one_clear_error():
    model = load_model("glus-s", RELEASE / "checkpoint", vision_tower=RELEASE / "clip",
                       overrides=read_yaml_mapping(RELEASE / "glus_override.yaml"))
    with pytest.raises(ValueError, match="matches no LoRA layer"):  # no LoRA injected
        load_lora_factors(model, FIXTURE / "adapter")
    add_lora(model.vlm.language_model, LoraSpec(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ValueError, match=r"lora_A has shape \(8, 32\), the model's layer \(4, 32\)"):
        load_lora_factors(model, FIXTURE / "adapter")
