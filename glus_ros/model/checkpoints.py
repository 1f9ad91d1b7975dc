"""Loading weights: official SAM 2 ``.pt`` files, official GLUS/LISA checkpoints, and our own model dirs.

Official layouts (facts from the published checkpoints):
- SAM 2: ``torch.save({"model": state_dict})`` of ``SAM2Base``.
- GLUS (LISA-style ``GLUSForCausalLM``): ``model.visual_model.*`` (SAM2Base), ``model.text_hidden_fcs.0.*``
  (the [SEG] projection), ``model.mm_projector.*``, ``model.vision_tower.vision_tower.*`` (CLIP),
  ``model.layers.* / model.embed_tokens / model.norm`` (Llama) and ``lm_head``; as safetensors or
  ``pytorch_model*.bin`` shards with an optional ``*.index.json``.
Our own trained models: a directory with ``config.yaml``, ``model.safetensors``, tokenizer files and optional
``adapters/<task>.safetensors`` (task adapters, see task_adapter.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

# official GLUS key prefix -> our module prefix (first match wins)
GLUS_PREFIX_MAP: list[tuple[str, str]] = [
    ("model.visual_model.", "sam.sam."),
    ("model.text_hidden_fcs.0.", "seg_projection."),
    ("model.mm_projector.", "vlm.llava.model.multi_modal_projector."),
    ("model.vision_tower.vision_tower.vision_model.", "vlm.llava.model.vision_tower."),
    ("model.vision_tower.vision_tower.", "vlm.llava.model.vision_tower."),
    ("model.embed_tokens.", "vlm.llava.model.language_model.embed_tokens."),
    ("model.layers.", "vlm.llava.model.language_model.layers."),
    ("model.norm.", "vlm.llava.model.language_model.norm."),
    ("lm_head.", "vlm.llava.lm_head."),
]
# LLaVA-1.5 style two-layer projector (mm_projector.0 / .2) -> transformers' linear_1 / linear_2
PROJECTOR_INDEX_MAP = {"multi_modal_projector.0.": "multi_modal_projector.linear_1.",
                       "multi_modal_projector.2.": "multi_modal_projector.linear_2."}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names the file and the offending keys."""


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)    # file keys with no place in the model
    mismatched: list[str] = field(default_factory=list)    # same key, different shape
    initial: list[str] = field(default_factory=list)       # model keys left at their initial value on purpose

    def summary(self, limit: int = 8) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {few(self.missing)}")
        if self.mismatched:
            parts.append(f"shape mismatch {len(self.mismatched)}: {few(self.mismatched)}")
        if self.initial:
            parts.append(f"left at their initial value {len(self.initial)}: {few(self.initial)}")
        if self.unexpected:
            parts.append(f"unused {len(self.unexpected)}: {few(self.unexpected)}")
        return "; ".join(parts)


def assign_state(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                 strict: bool = True, optional_missing: tuple[str, ...] = ()) -> LoadReport:
    """Copy tensors by name; missing or mis-shaped keys raise (strict), unused keys are reported."""
    own = module.state_dict()
    report = LoadReport(source)
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in state and not k.startswith(optional_missing)]
    report.loaded = sorted(usable)
    if strict and (report.missing or report.mismatched):
        raise CheckpointError(report.summary())
    module.load_state_dict(usable, strict=False)
    if report.unexpected:
        log.warning("%s", report.summary())
    else:
        log.info("%s", report.summary())
    return report


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle of an unknown class, truncated file...
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc


def load_sam2_checkpoint(sam2_base: nn.Module, path: Path, strict: bool = True) -> LoadReport:
    """An official SAM 2 ``.pt`` (``{"model": state_dict}``) into a ``SAM2Base``.

    Object-pointer weights of the official files are reported as unused: GLUS reads no pointers.
    """
    return assign_state(sam2_base, read_sam2_state(path), str(path), strict=strict)


def read_sam2_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an official SAM 2 ``.pt`` (``{"model": state_dict}``); clear errors otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"SAM 2 checkpoint {path} does not exist")
    raw = _torch_load(path)
    if not isinstance(raw, dict) or "model" not in raw:
        keys = list(raw)[:5] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: not a SAM 2 checkpoint (expected a dict with a 'model' key, found {keys})")
    return raw["model"]


def read_state_files(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file or directory (safetensors or .bin, sharded or not)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = []
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = path / index_name
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError) as exc:
                    raise CheckpointError(f"{index}: not a valid shard index: {exc}") from exc
                files = [path / name for name in sorted(set(weight_map.values()))]
                break
        if not files:
            files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors or pytorch_model*.bin weights found")
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint shard {file} listed in the index does not exist")
        if file.suffix == ".safetensors":
            try:
                state.update(load_file(str(file)))
            except Exception as exc:
                raise CheckpointError(f"{file}: cannot read safetensors: {exc}") from exc
        else:
            raw = _torch_load(file)
            state.update(raw.get("state_dict", raw) if isinstance(raw, dict) else {})
    return state


def map_glus_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official GLUS/LISA keys onto our modules; returns (mapped, unmatched official keys)."""
    mapped: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("base_model.model.")  # peft-wrapped saves
        for src, dst in GLUS_PREFIX_MAP:
            if key.startswith(src):
                new = dst + key[len(src):]
                for a, b in PROJECTOR_INDEX_MAP.items():
                    new = new.replace(a, b)
                mapped[new] = value
                break
        else:
            unmatched.append(key)
    return mapped, unmatched


def load_glus_checkpoint(model: nn.Module, path: Path, strict: bool = True) -> LoadReport:
    """An official GLUS (or LISA) checkpoint into a ``GLUSModel``.

    The official files may hold more than we use (e.g. SAM 2 object-pointer heads): those are
    reported, not fatal. A model tensor the file lacks, or a shape that differs, is an error.
    """
    state = read_state_files(path)
    mapped, unmatched = map_glus_keys(state)
    if not mapped:
        raise CheckpointError(f"{path}: no GLUS/LISA keys found (first keys: {list(state)[:5]})")
    vocab_key = "vlm.llava.model.language_model.embed_tokens.weight"
    if vocab_key in mapped:
        _resize_vocab(model, mapped[vocab_key].shape[0])
    report = assign_state(model, mapped, str(path), strict=strict)
    report.unexpected.extend(unmatched)
    if unmatched:
        log.warning("%s: %d keys match no GLUS module: %s", path, len(unmatched), ", ".join(unmatched[:8]))
    return report


def _resize_vocab(model: nn.Module, rows: int) -> None:
    """Official checkpoints carry the vocabulary (with [SEG]) they were trained with."""
    if rows < len(model.tokenizer):
        raise CheckpointError(f"checkpoint vocabulary has {rows} rows, tokenizer needs {len(model.tokenizer)}")
    model.vlm.llava.resize_token_embeddings(rows)


WEIGHTS_FILE = "model.safetensors"


STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def save_model_dir(model: nn.Module, folder: Path, extra_files: dict[str, str] | None = None,
                   storage: str = "fp32") -> Path:
    """Our own format: ``config.yaml`` + ``model.safetensors`` + tokenizer files, loadable by name.

    ``storage`` "fp16" halves the file (shipped models); loading casts back to the model's dtype.
    """
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"storage must be one of {sorted(STORAGE_DTYPES)}, got {storage!r}")
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.save(folder / "config.yaml")
    dtype = STORAGE_DTYPES[storage]
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_file(_dedupe_shared(state), str(folder / WEIGHTS_FILE))
    model.tokenizer.save_pretrained(str(folder))
    _save_adapters(model, folder, dtype)
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)
    return folder


def _save_adapters(model: nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """The model's task adapters as ``adapters/<task>.safetensors``; stale adapter files of the folder go."""
    from glus_ros.model.task_adapter import ADAPTERS_DIR, save_task_adapters

    adapters = getattr(model, "task_adapters", {})
    for stale in sorted((folder / ADAPTERS_DIR).glob("*.safetensors")):
        if stale.stem not in adapters:
            stale.unlink()
    save_task_adapters(adapters, folder, dtype)


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): store copies instead."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


# heads a config override may add to a trained model; they start from their initialisation
ADDABLE_HEADS = ("point_head.", "key_frame.", "vlm.temporal.", "grounding_map.", "vlm.visual_position.")


PATCH_EMBEDDING = "embeddings.patch_embedding.weight"


def resize_patch_embeddings(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Fit stored vision patch kernels to the model's patch size (a finer vision input, same token grid).

    A (C, 3, p, p) kernel becomes (C, 3, q, q) by bilinear resampling scaled by (p / q)^2, so a q-pixel
    patch of the image enlarged q/p times gives about the response the p-pixel patch gave (FlexiViT's
    observation); training goes on from there. Returns the keys changed.
    """
    own = model.state_dict()
    changed = []
    for key, value in list(state.items()):
        if not key.endswith(PATCH_EMBEDDING) or key not in own or own[key].shape == value.shape:
            continue
        want = own[key].shape
        if value.dim() != 4 or tuple(value.shape[:2]) != tuple(want[:2]):
            continue  # another width or depth: left for assign_state to report
        resized = F.interpolate(value.float(), size=tuple(want[2:]), mode="bilinear", align_corners=False)
        state[key] = (resized * (value.shape[2] * value.shape[3]) / (want[2] * want[3])).to(value.dtype)
        changed.append(key)
        log.info("%s: patch kernel resized %s -> %s", key, tuple(value.shape[2:]), tuple(want[2:]))
    return changed


LLM_LAYERS = "vlm.llava.model.language_model.layers."
# a residual branch's last projection: zero makes a new decoder layer pass its input through unchanged
RESIDUAL_OUTPUTS = ("self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias")


def _llm_layer(key: str) -> int | None:
    return int(key[len(LLM_LAYERS):].split(".", 1)[0]) if key.startswith(LLM_LAYERS) else None


def grow_llm_layers(model: nn.Module, state: dict[str, torch.Tensor]) -> list[int]:
    """Fill the decoder layers a deeper LLM config adds on top of stored ones; returns their indices.

    Each new layer keeps its fresh initialisation except its residual outputs, which start at zero, so
    the grown model computes exactly what the stored one did and training deepens it from there (the
    zero-init residual branch of function-preserving growth). A state with no LLM layers is left alone.
    """
    stored = {i for i in map(_llm_layer, state) if i is not None}
    if not stored:
        return []
    own = model.state_dict()
    added = sorted({i for i in map(_llm_layer, own) if i is not None and i > max(stored)})
    for key, value in own.items():
        if _llm_layer(key) in added:
            state[key] = torch.zeros_like(value) if key.endswith(RESIDUAL_OUTPUTS) else value.clone()
    if added:
        log.info("LLM grown from %d to %d layers (new layers start as the identity)", max(stored) + 1, max(added) + 1)
    return added


def load_model_dir_weights(model: nn.Module, folder: Path, optional_missing: tuple[str, ...] = (),
                           resize_patches: bool = False, grow_layers: bool = False) -> LoadReport:
    """A trained folder's weights; an override may change the vision patch size (``resize_patches``) or
    deepen the LLM (``grow_layers``)."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"model directory {folder} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors: {exc}") from exc
    if resize_patches:
        resize_patch_embeddings(model, state)
    if grow_layers:
        grow_llm_layers(model, state)
    report = assign_state(model, state, str(weights), strict=True, optional_missing=optional_missing)
    if hasattr(model, "task_adapters"):
        from glus_ros.model.task_adapter import load_task_adapters

        model.task_adapters = load_task_adapters(folder, model)
    return report
