"""LoRA adapters on the LLM (peft) and merging them back for export.

Adapters are injected in place (``peft.inject_adapter_in_model``), so the GLUS module tree and its
methods stay as they are; export folds each adapter into its base weight and puts the plain layer
back, so a saved model has the original key layout and loads without peft. A task-adapter recipe
instead takes the factors out (:func:`extract_lora`) and leaves the base weights untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from glus_ros.model.checkpoints import map_glus_keys
from glus_ros.training.config import LoraSpec


def add_lora(llm: nn.Module, spec: LoraSpec) -> list[nn.Parameter]:
    """Inject LoRA into ``llm``'s target projections; returns the adapter parameters (trainable)."""
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), bias="none")
    before = {name: p.requires_grad for name, p in llm.named_parameters()}
    inject_adapter_in_model(config, llm)
    # peft freezes every other parameter of the module it injects into: keep what the recipe made trainable
    # (the released GLUS trains embed_tokens beside LoRA); the wrapped base layers keep their names under base_layer
    for name, p in llm.named_parameters():
        if "lora_" not in name:
            p.requires_grad_(before.get(name, before.get(name.replace(".base_layer.", "."), False)))
    params = [p for name, p in llm.named_parameters() if "lora_" in name]
    if not params:
        raise ValueError(f"LoRA found none of the target modules {spec.target_modules} in the LLM")
    for p in params:
        p.requires_grad_(True)
    return params


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in module.modules())


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer and restore the plain layer; returns how many."""
    merged = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
                merged += 1
    return merged


def extract_lora(module: nn.Module) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """Take every LoRA adapter out of ``module`` unmerged (plain layers back, base weights unchanged): the
    (lora_A, lora_B) weights by the layers' paths in ``module``, and their common scale."""
    factors, scales = {}, set()
    for parent_name, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                (adapter,) = child.active_adapters
                path = f"{parent_name}.{name}" if parent_name else name
                factors[path] = (child.lora_A[adapter].weight, child.lora_B[adapter].weight)
                scales.add(float(child.scaling[adapter]))
                setattr(parent, name, child.get_base_layer())
    if len(scales) > 1:
        raise ValueError(f"LoRA layers with different scales {sorted(scales)}: one adapter needs one scale")
    if not factors:
        raise ValueError("the module holds no LoRA layers to take out")
    return factors, scales.pop()


def load_lora_factors(model: nn.Module, folder: str | Path) -> int:
    """Copy a peft adapter's LoRA factors (a :func:`~glus_ros.model.release_export.save_adapter` folder or the
    official training's) into ``model``'s injected, unmerged LoRA layers, e.g. to go on training from it; returns
    how many tensors were set. Every factor must meet a LoRA layer of its shape."""
    from glus_ros.model.release_export import read_lora_adapter

    _r, _alpha, path, pairs = read_lora_adapter(folder)
    own = dict(model.named_parameters())
    updates = []
    for module, pair in sorted(pairs.items()):
        for which in ("A", "B"):
            mapped, _ = map_glus_keys({f"{module}.lora_{which}.default.weight": pair[which]})
            key = next(iter(mapped), None)
            if key is None or key not in own:
                raise ValueError(f"{path}: {module}.lora_{which} matches no LoRA layer of the model (inject LoRA with "
                                 "the adapter's target_modules first)")
            if own[key].shape != pair[which].shape:
                raise ValueError(f"{path}: {module}.lora_{which} has shape {tuple(pair[which].shape)}, the model's "
                                 f"layer {tuple(own[key].shape)}")
            updates.append((own[key], pair[which]))
    with torch.no_grad():
        for param, value in updates:
            param.copy_(value)
    return len(updates)
