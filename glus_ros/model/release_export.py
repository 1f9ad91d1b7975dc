"""Exporting a fine-tuned GLUS release, and applying a small adapter export to a release.

Why two exports: a full release (:func:`save_release`) is what the official code and
``load_official_model`` load without anything else, but it is the size of the model (13 GB for GLUS-S in
bf16); an adapter (:func:`save_adapter`) holds only what LoRA fine-tuning changed (the LoRA factors, in peft's
own on-disk format, plus the trained heads) and is applied to the release it was trained from
(:func:`load_adapter`, ``--adapter DIR``).

Release layout (as the official merge script writes it with transformers 4.31 ``save_pretrained``):
``config.json`` (the source release's, ``torch_dtype`` set to the stored precision), safetensors shards
``model-0000N-of-0000M.safetensors`` + ``model.safetensors.index.json`` under the official key names (the inverse
of ``map_glus_keys``, checked key by key), the tokenizer files, no vision tower. The tensors of the official
layout that GLUS never runs (SAM 2's object-pointer heads, stored rotary frequencies, SAM2Transforms buffers)
are copied from the source release as stored: ``load_release`` does not need them, but the official
``from_pretrained`` then finds every key it expects, as in the source. SAM 2's fuser layer scales are stored
under their official name ``...fuser.layers.N.gamma`` with the value the model holds; the official loader (and
``official.load_weights: official_loader``) does not load that name and uses 1e-6 (docs/official_weights.md).

Adapter layout: ``adapter_config.json`` + ``adapter_model.safetensors`` as ``peft.get_peft_model(
GLUSForCausalLM).save_pretrained`` writes them (keys ``base_model.model.model.layers.N.self_attn.q_proj.lora_A.
weight``), ``trained_heads.safetensors`` (official key names) and ``glus_adapter.json`` (the release it was
trained from, the heads it holds).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from glus_ros.model.checkpoints import GLUS_PREFIX_MAP, PROJECTOR_INDEX_MAP, CheckpointError, map_glus_keys
from glus_ros.model.official_checkpoint import (
    TEXT_KEYS,
    VISION_PREFIX,
    check_config_json,
    iter_tensors,
    read_json_object,
    weight_files,
)

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.model", "added_tokens.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "tokenizer.json")
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = "model-{:05d}-of-{:05d}.safetensors"
DEFAULT_SHARD_BYTES = 10 * 10**9  # transformers' default max_shard_size "10GB"
STORAGE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LEGACY_ADAPTER_WEIGHTS = "adapter_model.bin"
HEADS_FILE = "trained_heads.safetensors"
ADAPTER_INFO = "glus_adapter.json"
ADAPTER_FORMAT = "glus_ros release adapter 1"
PEFT_PREFIX = "base_model.model."  # what PeftModelForCausalLM puts before GLUSForCausalLM's module paths
# the heads training changes besides LoRA (official name -> our module prefixes); "memory" is optional
HEADS: dict[str, tuple[str, ...]] = {
    "text_hidden_fcs": ("seg_projection.",),
    "mask_decoder": ("sam.sam.sam_mask_decoder.",),
    "lm_head": ("vlm.llava.lm_head.",),
    "embed_tokens": ("vlm.llava.model.language_model.embed_tokens.",),
    "mm_projector": ("vlm.llava.model.multi_modal_projector.",),
    "memory": ("sam.sam.memory_attention.", "sam.sam.memory_encoder.", "sam.sam.maskmem_tpos_enc",
               "sam.sam.no_mem_embed", "sam.sam.no_mem_pos_enc"),
}
DEFAULT_HEADS = ("text_hidden_fcs", "mask_decoder", "lm_head", "embed_tokens", "mm_projector")
# adapter_config.json options this loader does not implement, with the value that means "not used"
UNSUPPORTED_OPTIONS: dict[str, tuple] = {
    "use_rslora": (False, None), "use_dora": (False, None), "fan_in_fan_out": (False, None),
    "lora_bias": (False, None), "rank_pattern": ({}, None), "alpha_pattern": ({}, None),
    "modules_to_save": (None, []), "layer_replication": (None, []), "use_qalora": (False, None),
    "trainable_token_indices": (None, {}, []), "target_parameters": (None, []),
    "alora_invocation_tokens": (None, []),
}


# --- key names -----------------------------------------------------------------------------------------------
def official_key(ours: str) -> str:
    """The official GLUS key of one of our state-dict keys (inverse of ``map_glus_keys``); checked both ways."""
    plain = ours
    for a, b in PROJECTOR_INDEX_MAP.items():  # transformers' linear_1 / linear_2 back to LLaVA's .0 / .2
        plain = plain.replace(b, a)
    for src, dst in GLUS_PREFIX_MAP:
        if plain.startswith(dst) and not dst.startswith(VISION_PREFIX):
            official = src + plain[len(dst):]
            back, _ = map_glus_keys({official: torch.empty(0)})
            if list(back) != [ours]:
                raise CheckpointError(f"{ours}: its official name {official} maps back to {list(back)}")
            return official
    raise CheckpointError(f"{ours}: no official GLUS key name (the release layout holds only the GLUS modules)")


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft LoRA layers by their path in ``model`` (the path their base weight has in the plain model)."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def _adapter_of(path: str, layer: nn.Module) -> str:
    """The one active plain-LoRA adapter of a layer; variants (DoRA, rsLoRA, LoRA bias) are refused."""
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        raise ValueError(f"{path}: {len(active)} active LoRA adapters; the export handles exactly one")
    (adapter,) = active
    flags = [getattr(layer, name, {}).get(adapter) for name in ("use_dora", "lora_variant", "lora_bias")]
    if any(flag not in (None, False) for flag in flags):
        raise ValueError(f"{path}: a LoRA variant (DoRA, LoRA bias, ...) is not supported by the release export")
    if getattr(layer, "fan_in_fan_out", False):
        raise ValueError(f"{path}: fan_in_fan_out LoRA is not supported by the release export")
    return adapter


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state under the plain (peft-free) names, every LoRA folded into its base weight.

    Only the adapted weights are new tensors; the model itself is not changed.
    """
    layers = _lora_layers(model)
    merged: dict[str, torch.Tensor] = {}
    for path, layer in layers.items():
        base = layer.get_base_layer().weight.detach()
        if layer.merged or layer.disable_adapters:
            merged[f"{path}.weight"] = base  # already folded in, or switched off: the base is what runs
            continue
        delta = layer.get_delta_weight(_adapter_of(path, layer)).detach()
        merged[f"{path}.weight"] = (base.float() + delta.float()).to(base.dtype)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner = next((p for p in layers if key.startswith(p + ".")), None)
        if owner is not None:
            rest = key[len(owner) + 1:]
            if not rest.startswith("base_layer."):
                continue  # lora_A / lora_B / dropout: folded in above
            key = f"{owner}.{rest.removeprefix('base_layer.')}"
            value = merged.get(key, value)
        state[key] = value
    return state


def release_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Official key -> tensor of everything the release layout holds of ``model`` (no vision tower)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in _plain_state(model).items():
        if key.startswith(VISION_PREFIX):
            continue
        out[official_key(key)] = value.detach()
    return out


# --- writing -------------------------------------------------------------------------------------------------
def _prepare_folder(folder: Path, source: Path, overwrite: bool, owned: tuple[str, ...]) -> None:
    """Refuse to write over the source or over an existing export (unless ``overwrite``: its files go)."""
    if folder.resolve() == source.resolve():
        raise ValueError(f"{folder}: the export folder must not be the source release")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    existing = [p for pattern in owned for p in folder.glob(pattern)]
    if existing and not overwrite:
        raise FileExistsError(f"{folder} already holds {existing[0].name} (an earlier export): give another folder "
                              "or overwrite=True")
    for path in existing:
        path.unlink()


def _source_config(source: Path) -> dict:
    config_json = source / "config.json"
    if not source.is_dir() or not config_json.is_file():
        raise FileNotFoundError(f"source release {source}: no config.json (give the release folder the model was "
                                "loaded from)")
    return json.loads(config_json.read_text())


def _storage_dtype(model: nn.Module, config: dict, dtype: str | None) -> torch.dtype:
    name = dtype or config.get("torch_dtype")
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    name = aliases.get(str(name), name)
    if name in STORAGE_NAMES:
        return STORAGE_NAMES[name]
    if dtype is not None:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_NAMES)} (or fp32, bf16, fp16), got {dtype!r}")
    return next(model.parameters()).dtype


def _unused_source_tensors(source: Path, have: set[str], ours: set[str]) -> dict[str, torch.Tensor]:
    """Tensors of the source release that map onto no model tensor (GLUS never runs them), as stored; only those
    are read (safetensors by key, ``.bin`` shards memory-mapped)."""
    def unused(key: str) -> bool:
        mapped, _ = map_glus_keys({key: torch.empty(0)})
        return key not in have and not any(k in ours or k.startswith(VISION_PREFIX) for k in mapped)

    out = {}
    for file in weight_files(source):
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    out.update({k: handle.get_tensor(k) for k in handle.keys() if unused(k)})
            except Exception as exc:
                raise CheckpointError(f"{file}: cannot read safetensors: {exc}") from exc
        else:
            out.update({k: v for k, v in iter_tensors(file) if unused(k)})
    return out


def _write_shards(state: dict[str, torch.Tensor], folder: Path, dtype: torch.dtype, max_shard_bytes: int) -> int:
    """Greedy shards in key order, cast per shard (no full-precision copy of the model at once)."""
    def size(t: torch.Tensor) -> int:
        return t.numel() * (torch.empty(0, dtype=dtype).element_size() if t.is_floating_point() else t.element_size())

    groups: list[list[str]] = [[]]
    used = 0
    for key, value in state.items():
        if groups[-1] and used + size(value) > max_shard_bytes:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size(value)
    weight_map, total = {}, 0
    for i, keys in enumerate(groups, 1):
        name = SHARD_PATTERN.format(i, len(groups))
        shard, seen = {}, set()
        for key in keys:
            value = state[key].detach().cpu()
            value = value.to(dtype) if value.is_floating_point() else value
            shard[key] = value.clone() if value.data_ptr() in seen else value.contiguous()  # safetensors: no sharing
            seen.add(value.data_ptr())
            total += size(value)
            weight_map[key] = name
        save_file(shard, str(folder / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return len(groups)


def _copy_tokenizer(source: Path, folder: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
            copied.append(name)
    return copied


def save_release(model: nn.Module, folder: str | Path, source_release: str | Path, dtype: str | None = None,
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = False) -> Path:
    """``model`` (LoRA folded in, the model untouched) as a release folder that ``load_official_model`` and the
    official code load like ``source_release``; ``dtype`` the stored precision (default: the source's
    ``torch_dtype``). Returns the folder."""
    folder, source = Path(folder), Path(source_release)
    config = _source_config(source)
    state = release_state(model)
    embed = state.get("model.embed_tokens.weight")
    if embed is not None and int(config.get("vocab_size", embed.shape[0])) != embed.shape[0]:
        raise CheckpointError(f"{source / 'config.json'}: vocab_size {config.get('vocab_size')} but the model's "
                              f"embeddings have {embed.shape[0]} rows")
    text = {k: v for k, v in dict(model.cfg.vlm.text).items() if k in TEXT_KEYS}
    check_config_json(source / "config.json", text, TEXT_KEYS, "vlm.text")
    storage = _storage_dtype(model, config, dtype)
    carried = _unused_source_tensors(source, set(state), set(model.state_dict()))
    _prepare_folder(folder, source, overwrite, ("model-*.safetensors", "model.safetensors", "pytorch_model*.bin",
                                                "*.index.json"))
    shards = _write_shards({**state, **carried}, folder, storage, max_shard_bytes)
    config["torch_dtype"] = next(k for k, v in STORAGE_NAMES.items() if v == storage)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    copied = _copy_tokenizer(source, folder)
    log.info("%s: %d tensors (+ %d carried from %s, not run by GLUS) in %d shards (%s), tokenizer files %s",
             folder, len(state), len(carried), source, shards, config["torch_dtype"], ", ".join(copied))
    return folder


# --- adapter -------------------------------------------------------------------------------------------------
def _head_state(model: nn.Module, heads: tuple[str, ...], lora_paths: list[str],
                ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The trained heads' tensors under official names, and how many tensors each head has."""
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise ValueError(f"unknown heads {unknown}; known: {sorted(HEADS)}")
    prefixes = tuple(p for h in heads for p in HEADS[h])
    inside = [p for p in lora_paths if (p + ".").startswith(prefixes)]
    if inside:
        raise ValueError(f"{inside[0]}: a LoRA layer inside a trained head; export a full release instead")
    state, counts = {}, dict.fromkeys(heads, 0)
    for key, value in model.state_dict().items():
        head = next((h for h in heads if key.startswith(HEADS[h])), None)
        if head is not None:
            state[official_key(key)] = value.detach()
            counts[head] += 1
    empty = [h for h, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"the model has no {empty[0]} to export")
    return state, counts


def save_adapter(model: nn.Module, folder: str | Path, source_release: str | Path,
                 heads: tuple[str, ...] = DEFAULT_HEADS, overwrite: bool = False) -> Path:
    """The LoRA factors of ``model`` in peft's format (as the official training's ``get_peft_model(
    GLUSForCausalLM).save_pretrained``) and the trained ``heads`` (official key names): what a fine-tuning run
    changed, to apply to ``source_release`` with :func:`load_adapter`. Returns the folder."""
    from peft import LoraConfig

    folder, source = Path(folder), Path(source_release)
    _source_config(source)
    layers = _lora_layers(model)
    if not layers:
        raise ValueError("the model holds no LoRA layers: save_release exports it as a full release")
    factors: dict[str, torch.Tensor] = {}
    settings = set()
    for path, layer in layers.items():
        adapter = _adapter_of(path, layer)
        if layer.merged:
            raise ValueError(f"{path}: its LoRA is already merged into the base weight; the factors alone would "
                             "apply it twice")
        r, alpha = int(layer.r[adapter]), layer.lora_alpha[adapter]
        if abs(float(layer.scaling[adapter]) - alpha / r) > 1e-12:
            raise ValueError(f"{path}: LoRA scale {layer.scaling[adapter]} is not alpha / r (rsLoRA?): unsupported")
        dropout = layer.lora_dropout[adapter]
        settings.add((r, alpha, float(getattr(dropout, "p", 0.0))))
        module = official_key(f"{path}.weight").removesuffix(".weight")
        factors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = layer.lora_A[adapter].weight.detach().cpu().contiguous()
        factors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = layer.lora_B[adapter].weight.detach().cpu().contiguous()
    if len(settings) > 1:
        raise ValueError(f"LoRA layers with different (r, alpha, dropout) {sorted(settings)}: one adapter config "
                         "holds one")
    ((r, alpha, dropout),) = settings
    targets = sorted({p.rsplit(".", 1)[-1] for p in layers})
    head_state, counts = _head_state(model, tuple(heads), list(layers))
    _prepare_folder(folder, source, overwrite, (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEADS_FILE, ADAPTER_INFO))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        task_type="CAUSAL_LM", base_model_name_or_path=str(source.resolve()), inference_mode=True)
    config.save_pretrained(str(folder))
    save_file(factors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    if head_state:
        save_file({k: v.cpu().contiguous() for k, v in head_state.items()}, str(folder / HEADS_FILE),
                  metadata={"format": "pt"})
    info = {"format": ADAPTER_FORMAT, "release": str(source.resolve()),
            "lora": {"r": r, "lora_alpha": alpha, "target_modules": targets, "layers": len(layers)},
            "heads": counts}
    (folder / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    log.info("%s: LoRA on %d layers (r %d, alpha %s) + %d head tensors (%s), for %s", folder, len(layers), r, alpha,
             len(head_state), ", ".join(heads), source)
    return folder


@dataclass
class AdapterReport:
    """What :func:`load_adapter` changed in the model."""

    source: str
    merged: list[str] = field(default_factory=list)     # our weights a LoRA delta was added to
    assigned: list[str] = field(default_factory=list)   # our tensors replaced by a trained head's
    scale: float = 0.0
    release: str | None = None                          # the release it was trained from (glus_adapter.json)

    def summary(self) -> str:
        return (f"{self.source}: LoRA merged into {len(self.merged)} weights (scale {self.scale:g}), "
                f"{len(self.assigned)} head tensors assigned")


def _read_adapter_json(path: Path) -> dict:
    """An adapter folder's JSON file (official_checkpoint's reader, with the missing file named as the adapter's)."""
    if not path.is_file():
        raise FileNotFoundError(f"adapter {path.parent}: no {path.name}")
    return read_json_object(path)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"adapter {path.parent}: no {path.name}")
    if path.suffix == ".bin":  # older peft versions save adapter_model.bin
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a state dict, found {type(raw).__name__}")
        return raw
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read safetensors: {exc}") from exc


def _check_adapter_config(path: Path) -> tuple[int, float]:
    """(r, lora_alpha) of a plain LoRA adapter_config.json; any option this loader does not implement is an error."""
    config = _read_adapter_json(path)
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type {config.get('peft_type')!r}: only LORA adapters are supported")
    for key, neutral in UNSUPPORTED_OPTIONS.items():
        if key in config and config[key] not in neutral:
            raise CheckpointError(f"{path}: {key} {config[key]!r} is not supported (plain LoRA only)")
    if config.get("bias", "none") != "none":
        raise CheckpointError(f"{path}: bias {config['bias']!r} is not supported (bias 'none' only)")
    try:
        r, alpha = int(config["r"]), float(config["lora_alpha"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: needs integer r and lora_alpha ({exc})") from exc
    if r <= 0:
        raise CheckpointError(f"{path}: r must be positive, got {r}")
    return r, alpha


def _lora_pairs(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Official module path -> {"A": ..., "B": ...}; keys with an adapter name (``lora_A.default.weight``) too."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, which = None, None
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key and key.endswith(".weight"):
                module, which = key[:key.index(marker)], part[-1]
        if module is None:
            raise CheckpointError(f"{path}: {key} is not a LoRA factor (lora_A / lora_B weight)")
        pairs.setdefault(module.removeprefix(PEFT_PREFIX), {})[which] = value
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"{path}: {module} has lora_{next(iter(pair))} but no lora_"
                                  f"{'B' if 'A' in pair else 'A'}")
    if not pairs:
        raise CheckpointError(f"{path}: no LoRA factors")
    return pairs


def read_lora_adapter(folder: str | Path) -> tuple[int, float, Path, dict[str, dict[str, torch.Tensor]]]:
    """(r, lora_alpha, weights file, {official module path: {"A": lora_A, "B": lora_B}}) of a peft LoRA folder
    (``adapter_model.safetensors``, or the older ``adapter_model.bin``), its options checked (plain LoRA only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    r, alpha = _check_adapter_config(folder / ADAPTER_CONFIG)
    weights_path = folder / ADAPTER_WEIGHTS
    if not weights_path.is_file() and (folder / LEGACY_ADAPTER_WEIGHTS).is_file():
        weights_path = folder / LEGACY_ADAPTER_WEIGHTS
    return r, alpha, weights_path, _lora_pairs(weights_path, _read_tensors(weights_path))


def load_adapter(model: nn.Module, folder: str | Path) -> AdapterReport:
    """Apply a :func:`save_adapter` folder (or a plain peft LoRA folder) to a release model: every LoRA merged into
    its base weight (W += alpha / r * B @ A), the trained heads assigned. Everything is checked before anything
    changes; a problem is one error naming the file and the key."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    if _lora_layers(model):
        raise ValueError("the model holds peft LoRA layers: load the adapter into a plain release model")
    r, alpha, weights_path, pairs = read_lora_adapter(folder)
    scale = alpha / r
    info = _read_adapter_json(folder / ADAPTER_INFO) if (folder / ADAPTER_INFO).is_file() else {}
    head_names = list(info.get("heads", {}))
    heads = _read_tensors(folder / HEADS_FILE) if head_names or (folder / HEADS_FILE).is_file() else {}
    own = model.state_dict(keep_vars=True)
    updates: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for module, pair in sorted(pairs.items()):
        mapped, _ = map_glus_keys({f"{module}.weight": pair["A"]})
        ours = next(iter(mapped), None)
        if ours is None or ours not in own:
            raise CheckpointError(f"{weights_path}: {module}.lora_A.weight matches no layer of the model")
        if own[ours].dim() != 2:
            raise CheckpointError(f"{weights_path}: {module} is not a linear layer of the model")
        out_features, in_features = own[ours].shape
        a, b = pair["A"], pair["B"]
        if tuple(a.shape) != (r, in_features) or tuple(b.shape) != (out_features, r):
            raise CheckpointError(f"{weights_path}: {module}: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} do not "
                                  f"fit r {r} and the layer's weight {tuple(own[ours].shape)}")
        updates.append((ours, own[ours], a, b))
    assigned: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for key, value in heads.items():
        mapped, _ = map_glus_keys({key: value})
        ours = next(iter(mapped), None)
        if ours is None or ours not in own or ours.startswith(VISION_PREFIX):
            raise CheckpointError(f"{folder / HEADS_FILE}: {key} matches no tensor of the model")
        if tuple(own[ours].shape) != tuple(value.shape):
            raise CheckpointError(f"{folder / HEADS_FILE}: {key} {tuple(value.shape)} vs model "
                                  f"{tuple(own[ours].shape)}")
        assigned.append((ours, own[ours], value))
    report = AdapterReport(str(folder), scale=scale, release=info.get("release"))
    with torch.no_grad():
        for ours, weight, a, b in updates:
            delta = (b.float() @ a.float()) * scale
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
            report.merged.append(ours)
        for ours, target, value in assigned:
            target.copy_(value.to(device=target.device, dtype=target.dtype))
            report.assigned.append(ours)
    log.info("%s", report.summary() + (f" (trained from {report.release})" if report.release else ""))
    return report
