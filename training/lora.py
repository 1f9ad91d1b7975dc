"""LoRA adapters on the LLM (peft) and merging them back for export.

Adapters are injected in place (``peft.inject_adapter_in_model``), so the GLUS module tree and its
methods stay as they are; export folds each adapter into its base weight and puts the plain layer
back, so a saved model has the original key layout and loads without peft. A task-adapter recipe
instead takes the factors out (:func:`extract_lora`) and leaves the base weights untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
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


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def read_peft_adapter(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors) of a peft LoRA folder as ``PeftModel.save_pretrained`` writes it (the official
    GLUS training saves its LoRA this way): ``adapter_model.safetensors`` or the older ``adapter_model.bin``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no {ADAPTER_CONFIG}: not a peft LoRA adapter folder")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{config_path}: peft_type {config.get('peft_type')!r}, only LORA adapters are supported")
    for unsupported in ("use_rslora", "use_dora"):
        if config.get(unsupported):
            raise ValueError(f"{config_path}: {unsupported} is not supported (plain LoRA only)")
    for name in ADAPTER_FILES:
        path = folder / name
        if path.is_file():
            state = load_file(str(path)) if name.endswith(".safetensors") else torch.load(
                path, map_location="cpu", weights_only=True)
            return config, state
    raise FileNotFoundError(f"{folder} has none of {', '.join(ADAPTER_FILES)}")


def official_lora_key(key: str) -> str:
    """A saved peft LoRA key (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``) as the official
    model's parameter name under peft (``model.layers.0.self_attn.q_proj.lora_A.default.weight``)."""
    key = key.removeprefix("base_model.model.")
    for part in (".lora_A.", ".lora_B."):
        if part in key and part + "default." not in key:
            key = key.replace(part, part + "default.")
    return key


def load_lora_factors(model: nn.Module, folder: str | Path) -> int:
    """Copy a peft adapter's LoRA factors into ``model``'s injected (unmerged) LoRA layers, e.g. to go on training
    from a released adapter; returns how many tensors were set. Every factor must meet a layer of its shape."""
    config, state = read_peft_adapter(folder)
    mapped, unmatched = map_glus_keys({official_lora_key(k): v for k, v in state.items()})
    own = dict(model.named_parameters())
    problems = [k for k in mapped if k not in own] + unmatched
    if problems:
        raise ValueError(f"{folder}: LoRA tensors that match no LoRA layer of the model: {', '.join(problems[:4])}"
                         " (inject LoRA with the adapter's target_modules first)")
    with torch.no_grad():
        for key, value in mapped.items():
            if own[key].shape != value.shape:
                raise ValueError(f"{folder}: {key} has shape {tuple(value.shape)}, the model's layer "
                                 f"{tuple(own[key].shape)} (rank {config.get('r')}?)")
            own[key].copy_(value)
    return len(mapped)
