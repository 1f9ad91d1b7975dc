"""Loading the released GLUS-S / GLUS-A folders as they are published.

A release folder (e.g. a local copy of Swindl/GLUS-S) holds what the official merge script writes with
transformers 4.31 ``save_pretrained``: ``config.json``, the weights as ``pytorch_model-0000N-of-0000M.bin``
(+ ``pytorch_model.bin.index.json``) or safetensors shards, and the slow LLaMA tokenizer files
(``tokenizer.model``, ``added_tokens.json``, ``tokenizer_config.json``, ``special_tokens_map.json``). It carries
no vision tower (the merge script drops every ``vision_tower`` key): CLIP ViT-L/14 comes from its own local
Hugging Face folder (``openai/clip-vit-large-patch14`` layout, keys ``vision_model.*``). SAM 2.0 weights are
the checkpoint's ``model.visual_model.*``.

How the official inference loads the release is followed by default (``official.load_weights: official_loader``):
transformers 4.31's ``from_pretrained`` renames every stored key that contains "beta" (to "bias") or else
"gamma" (to "weight"), legacy TensorFlow names. SAM 2's memory-encoder fuser (``CXBlock``) keeps its layer scale
in a parameter named ``gamma``, so the official loader reports ``...fuser.layers.N.gamma`` missing and
``...fuser.layers.N.weight`` unexpected and runs with the constructor's value (``layer_scale_init_value``,
1e-6), whatever the release stores. ``as_stored`` loads the stored tensors instead.

The 7B language model is built on the meta device and the checkpoint tensors are assigned to it in the target
dtype, shard by shard (``.bin`` shards memory-mapped), so no float32 copy of it is ever made.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from glus_ros.model.checkpoints import CheckpointError, LoadReport, map_glus_keys

log = logging.getLogger(__name__)

VISION_PREFIX = "vlm.llava.model.vision_tower."
# present in the release, not needed: SAM 2 modules of the official config that GLUS never runs (object
# pointers), transformers 4.31's stored rotary frequencies (recomputed here) and the buffers of the model's
# SAM2Transforms (the ImageNet mean/std, used by the preprocessing here)
UNUSED_OFFICIAL_PREFIXES = ("sam.sam.obj_ptr_proj.", "sam.sam.mask_downsample.", "sam.sam.no_obj_ptr",
                            "sam.sam.obj_ptr_tpos_proj.", "transform.")
UNUSED_OFFICIAL_SUFFIXES = ("rotary_emb.inv_freq",)
# config.json keys (LlamaConfig) that must equal the model config's vlm.text values
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "vocab_size", "rms_norm_eps", "max_position_embeddings", "hidden_act")
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
               "image_size", "hidden_act", "layer_norm_eps")


LOAD_WEIGHTS = ("official_loader", "as_stored")


def hf431_key(key: str) -> str:
    """The name transformers 4.31 ``from_pretrained`` loads a stored key under ("beta" wins over "gamma")."""
    if "beta" in key:
        return key.replace("beta", "bias")
    if "gamma" in key:
        return key.replace("gamma", "weight")
    return key


def load_weights_mode(model: nn.Module) -> str:
    """The config's ``official.load_weights`` ("as_stored" for a config without an ``official`` section)."""
    official = getattr(getattr(model, "cfg", None), "official", None)
    mode = getattr(official, "load_weights", "as_stored") if official is not None else "as_stored"
    if mode not in LOAD_WEIGHTS:
        raise ValueError(f"official.load_weights must be one of {list(LOAD_WEIGHTS)}, got {mode!r}")
    return mode


def official_initial_value(model: nn.Module, key: str, like: torch.Tensor) -> torch.Tensor:
    """The value the official classes construct for a tensor their loader leaves unset.

    Only SAM 2's ``CXBlock.gamma`` (``layer_scale_init_value`` * ones, untouched by transformers' weight init,
    which only initialises Linear and Embedding modules) is known; any other such key is an error.
    """
    module_name, _, attr = key.rpartition(".")
    module = model.get_submodule(module_name)
    if type(module).__name__ == "CXBlock" and attr == "gamma":
        layer = model.cfg.sam2.get("memory_encoder", {}).get("fuser", {}).get("layer", {})
        value = float(layer.get("layer_scale_init_value", 1e-6))
        return torch.full(like.shape, value, dtype=torch.float32).to(like.dtype)
    raise CheckpointError(f"the official loader (transformers 4.31) would leave {key} at its initial value, which "
                          "glus_ros cannot reproduce; load the stored tensor with official.load_weights: as_stored")


def read_json_object(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw


def weight_files(folder: Path) -> list[Path]:
    """The weight shards of a Hugging Face folder: the index's files, else every safetensors / .bin file."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            weight_map = read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: no weight_map")
            files = [folder / name for name in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index}: shards listed but missing: {', '.join(missing)}")
            return files
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors or pytorch_model*.bin weights found")
    return files


def iter_tensors(file: Path):
    """(name, tensor) of one shard without reading the whole file into memory first."""
    if file.suffix == ".safetensors":
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{file}: cannot read safetensors: {exc}") from exc
        return
    try:
        try:
            raw = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            raw = torch.load(file, map_location="cpu", weights_only=True)  # a pre-zipfile (legacy) save
    except Exception as exc:  # corrupt zip, truncated file, a pickle of something else
        raise CheckpointError(f"{file}: cannot read checkpoint: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: expected a state dict, found {type(raw).__name__}")
    yield from raw.items()


def check_config_json(path: Path, expected: dict, keys: tuple[str, ...], what: str) -> None:
    """Values of ``path`` that the model config fixes too must agree (names the file and the keys)."""
    raw = read_json_object(path)
    if raw.get("model_type") == "clip" and isinstance(raw.get("vision_config"), dict):
        raw = raw["vision_config"]  # a full CLIPModel folder (openai/clip-vit-large-patch14)
    defaults = {"num_key_value_heads": raw.get("num_attention_heads"), "hidden_act": None, "layer_norm_eps": None}
    wrong = []
    for key in keys:
        if key not in expected:
            continue
        have = raw.get(key, defaults.get(key))
        if have is None:
            continue
        want = expected[key]
        same = abs(float(have) - float(want)) <= 1e-12 if isinstance(want, float) else have == want
        if not same:
            wrong.append(f"{key} {have!r} (model config {what}: {want!r})")
    if wrong:
        raise CheckpointError(f"{path}: does not match the model config: {'; '.join(wrong)}")


def _vision_expected(model: nn.Module) -> dict:
    cfg = model.cfg.vlm
    out = {k: v for k, v in cfg.vision.items() if k in VISION_KEYS}
    out["image_size"] = cfg.image_size
    return out


def _text_expected(model: nn.Module) -> dict:
    text = dict(model.cfg.vlm.text)
    text.setdefault("num_key_value_heads", text.get("num_attention_heads"))
    return {k: v for k, v in text.items() if k in TEXT_KEYS}


def read_release_state(folder: Path, dtype: torch.dtype, official_loader: bool = False,
                       ) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str], list[str]]:
    """The checkpoint's tensors mapped onto our module names and cast to ``dtype`` (one shard at a time).

    ``official_loader``: keys renamed as transformers 4.31 does, per shard. Returns (state, source file of each
    key, official keys that match no module, our names of the stored keys that the renaming took away).
    """
    state: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unmatched: list[str] = []
    renamed: list[str] = []
    for file in weight_files(folder):
        taken: set[str] = set()  # names a renamed key took in this shard (4.31 renames after reading the shard)
        for key, value in iter_tensors(file):
            if official_loader and hf431_key(key) != key:
                renamed.extend(map_glus_keys({key: value})[0])
                key = hf431_key(key)
                taken.add(key)
            elif key in taken:
                continue
            mapped, rest = map_glus_keys({key: value})
            unmatched.extend(rest)
            for name, tensor in mapped.items():
                state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
                source[name] = file.name
    return state, source, unmatched, renamed


def read_vision_tower(folder: Path, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], str]:
    """``vision_model.*`` of a local CLIP folder onto our vision tower (text tower and projections ignored)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"vision tower folder {folder} does not exist (a local copy of "
                                "openai/clip-vit-large-patch14: config.json + model.safetensors or pytorch_model.bin)")
    files = [f for f in weight_files(folder)]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        for key, value in iter_tensors(file):
            if key.startswith("vision_model.") and not key.endswith("position_ids"):
                state[VISION_PREFIX + key[len("vision_model."):]] = value.to(dtype)
    if not state:
        raise CheckpointError(f"{folder}: no vision_model.* weights (files: {', '.join(f.name for f in files)})")
    return state, ", ".join(f.name for f in files)


def _restore_rotary(model: nn.Module) -> None:
    """Rotary embeddings keep computed (non-persistent) buffers: rebuild those the meta build left empty."""
    for name, module in list(model.named_modules()):
        buffers = list(module.buffers(recurse=False))
        rotary = "Rotary" in type(module).__name__ and hasattr(module, "config")
        if rotary and any(b.is_meta for b in buffers):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, type(module)(config=module.config))


def load_release(model: nn.Module, checkpoint: Path, vision_tower: Path | None, dtype: torch.dtype) -> LoadReport:
    """A GLUS-S / GLUS-A release folder (and a CLIP folder) into a model built with ``empty_llm=True``.

    Every model tensor must come from one of the two folders with its exact shape; anything else is one
    :class:`CheckpointError` naming the file and the keys. Tensors of the official SAM 2 config that GLUS
    does not run (object pointers) are reported, not loaded. With ``official.load_weights: official_loader``
    (glus-s, glus-a) the keys transformers 4.31 does not load keep the official constructor's value and are
    listed in the report's ``initial``.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint {checkpoint} is not a folder (the released GLUS-S / GLUS-A folder: config."
                                "json, pytorch_model-*.bin or *.safetensors, tokenizer.model, added_tokens.json)")
    config_json = checkpoint / "config.json"
    if not config_json.is_file():
        raise CheckpointError(f"{checkpoint}: no config.json (not a GLUS release folder)")
    check_config_json(config_json, _text_expected(model), TEXT_KEYS, "vlm.text")
    vocab = int(read_json_object(config_json).get("vocab_size", 0))
    if vocab != len(model.tokenizer):
        raise CheckpointError(f"{config_json}: vocab_size {vocab} but the tokenizer files of {checkpoint} hold "
                              f"{len(model.tokenizer)} tokens (tokenizer.model + added_tokens.json)")
    official_loader = load_weights_mode(model) == "official_loader"
    state, source, unmatched, renamed = read_release_state(checkpoint, dtype, official_loader)
    if not state:
        raise CheckpointError(f"{checkpoint}: no GLUS keys found")
    has_vision = any(k.startswith(VISION_PREFIX) for k in state)
    vision_files = ""
    if not has_vision:
        if vision_tower is None:
            raise ValueError(f"{checkpoint} carries no vision tower (the GLUS release drops it): give a local CLIP "
                             "ViT-L/14 folder with --vision-tower DIR (or vlm.vision_tower in the model config)")
        clip_config = Path(vision_tower) / "config.json"
        if not clip_config.is_file():
            raise CheckpointError(f"{vision_tower}: no config.json (not a Hugging Face CLIP folder)")
        check_config_json(clip_config, _vision_expected(model), VISION_KEYS, "vlm.vision")
        vision_state, vision_files = read_vision_tower(Path(vision_tower), dtype)
        state.update(vision_state)
        source.update({k: vision_files for k in vision_state})
    own = model.state_dict(keep_vars=True)
    report = LoadReport(f"{checkpoint}" + (f" + {vision_tower}" if vision_files else ""))
    mismatched, usable = [], {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            mismatched.append(f"{key} ({source[key]}) {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
    missing = [k for k in own if k not in state]
    initial = [k for k in missing if k in renamed]  # what the official loader leaves at its initial value
    missing = [k for k in missing if k not in initial]
    if missing or mismatched:
        parts = [f"{checkpoint}" + (f" + {vision_tower}" if vision_files else "") + " does not fit the model"]
        if missing:
            where = "in the vision tower folder" if all(k.startswith(VISION_PREFIX) for k in missing) else "anywhere"
            parts.append(f"missing {len(missing)} ({where}): {', '.join(missing[:8])}"
                         + (f", ... ({len(missing)} in all)" if len(missing) > 8 else ""))
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)}: {', '.join(mismatched[:8])}"
                         + (f", ... ({len(mismatched)} in all)" if len(mismatched) > 8 else ""))
        raise CheckpointError("; ".join(parts))
    for key in initial:
        usable[key] = official_initial_value(model, key, own[key].detach()).to(dtype)
    model.load_state_dict(usable, strict=False, assign=True)
    _restore_rotary(model)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{checkpoint}: tensors still unset after loading: {', '.join(left[:8])}")
    report.loaded = sorted(k for k in usable if k not in initial)
    report.initial = sorted(initial)
    unused = report.unexpected + unmatched
    report.unexpected = unused
    known = [k for k in unused if k.startswith(UNUSED_OFFICIAL_PREFIXES) or k.endswith(UNUSED_OFFICIAL_SUFFIXES)]
    other = [k for k in unused if k not in known]
    if known:
        log.info("%s: %d tensors not needed (SAM 2 object-pointer heads, stored rotary frequencies, "
                 "SAM2Transforms buffers)", checkpoint, len(known))
    renamed_away = [k for k in other if hf431_key(k) == k and any(hf431_key(r) == k for r in initial)]
    other = [k for k in other if k not in renamed_away]
    if initial:
        log.info("%s: as the official loader (transformers 4.31 renames 'gamma'/'beta' keys), %d tensors keep their "
                 "initial value: %s (official.load_weights: as_stored loads them)", checkpoint, len(initial),
                 ", ".join(initial))
    if other:
        log.warning("%s: %d tensors match no module: %s", checkpoint, len(other), ", ".join(other[:8]))
    log.info("%s", report.summary())
    return report
