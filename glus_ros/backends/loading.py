"""Which backend a ``--model`` names, and loading it.

- a folder with ``config.json`` (a transformers model folder): its ``model_type`` decides; ``molmo2`` is
  the Molmo2 backend with the settings of ``models/molmo2.yaml``; ``sam3_video`` (facebook/sam3) the SAM 3
  concept backend (every instance of a noun phrase, tracked apart); any other model_type is refused;
- a folder with ``config.yaml`` (a glus_ros model), a config name (``tiny``, ``molmo2``) or a YAML file: its
  ``backend:`` key decides (absent: ``glus``). A ``backend: molmo2`` config names its model folder with
  ``molmo2.folder`` or gets it from ``--checkpoint DIR``.

The tiny default stays GLUS: every shipped GLUS config and model folder has no ``backend:`` key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from glus_ros.backends.base import GroundingBackend
from glus_ros.backends.kinds import BACKENDS, FOLDER_BACKENDS, _backend_yaml, _folder_backend, backend_of
from glus_ros.model.config import MemoryConfig, deep_update, read_yaml_mapping, resolve_config_path

__all__ = ["BACKENDS", "FOLDER_BACKENDS", "backend_of", "load_backend", "molmo2_config"]

MOLMO2_DEFAULTS = "molmo2"   # models/molmo2.yaml: the settings a bare Molmo2 folder runs with
BACKEND_KEYS = {"name", "backend", "molmo2", "sam2", "memory"}


def molmo2_config(spec: str | Path, checkpoint: str | Path | None) -> tuple[dict[str, Any], str]:
    """The Molmo2 backend config of a spec, with its model folder filled in; (config, where it came from)."""
    found = _backend_yaml(spec)
    if found is None:   # a Molmo2 folder itself: the shipped defaults
        if _folder_backend(spec) != "molmo2":
            raise ValueError(f"--model {spec} is not a Molmo2 folder")
        if checkpoint is not None:
            raise ValueError(f"--model {spec} is the Molmo2 folder already; --checkpoint is not read with it")
        defaults, source = _backend_yaml(MOLMO2_DEFAULTS)  # type: ignore[misc]
        raw = deep_update(defaults, {"molmo2": {"folder": str(spec)}})
        return raw, f"{spec} (settings of {source})"
    raw, source = copy.deepcopy(found[0]), found[1]
    unknown = sorted(set(raw) - BACKEND_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown} for the molmo2 backend; known: {sorted(BACKEND_KEYS)}")
    raw.setdefault("molmo2", {})
    if checkpoint is not None:
        raw["molmo2"]["folder"] = str(checkpoint)
    if not raw["molmo2"].get("folder"):
        raise ValueError(f"{source}: the molmo2 backend needs its model folder: --checkpoint DIR "
                         "(a local copy of e.g. allenai/Molmo2-4B) or molmo2.folder in the config")
    return raw, source


def _sam2_node(value: Any, source: str) -> dict[str, Any] | str:
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, dict):
        return value
    if isinstance(value, str):  # another model config's sam2 node
        raw = read_yaml_mapping(resolve_config_path(value))
        if not isinstance(raw.get("sam2"), dict):
            raise ValueError(f"{source}: sam2: {value!r} names a config without a sam2 node")
        return raw["sam2"]
    raise ValueError(f"{source}: sam2 must be 'auto', a model config name or a sam2 node, got {value!r}")


def load_backend(spec: str | Path, checkpoint: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
                 device: str = "cpu", dtype: str = "fp32", overrides: dict | None = None) -> GroundingBackend:
    """The backend a spec names, loaded (GLUS through ``inference.load_model``, which it wraps unchanged)."""
    if backend_of(spec) == "glus":
        from glus_ros.backends.glus import GLUSBackend
        from glus_ros.inference import load_model

        return GLUSBackend(load_model(spec, checkpoint, sam2_checkpoint, device, overrides), dtype)
    if backend_of(spec) == "sam3":
        return _load_sam3(spec, checkpoint, sam2_checkpoint, device, overrides)
    from glus_ros.backends.molmo2 import Molmo2Settings, load_molmo2_backend

    raw, source = molmo2_config(spec, checkpoint)
    if overrides:
        raw = deep_update(raw, overrides)
    settings = Molmo2Settings.from_dict(raw.get("molmo2"), source)
    try:
        memory = MemoryConfig(**raw.get("memory", {}))
    except TypeError as exc:
        raise ValueError(f"{source}: memory: {exc}") from exc
    assert settings.folder is not None
    return load_molmo2_backend(settings.folder, settings, _sam2_node(raw.get("sam2"), source), memory,
                               sam2_checkpoint, device)


def _load_sam3(spec: str | Path, checkpoint: str | Path | None, sam2_checkpoint: str | Path | None, device: str,
               overrides: dict | None) -> GroundingBackend:
    """The SAM 3 folder itself is the whole model: a checkpoint or a SAM 2 file given with it is a mistake."""
    from glus_ros.backends.sam3 import Sam3Settings, load_sam3_backend

    for flag, value in (("--checkpoint", checkpoint), ("--sam2-checkpoint", sam2_checkpoint)):
        if value is not None:
            raise ValueError(f"--model {spec} is a SAM 3 folder (detector and tracker in one); {flag} is not read "
                             "with it")
    unknown = sorted(set(overrides or {}) - {"sam3"})
    if unknown:
        raise ValueError(f"model overrides {unknown} do not apply to SAM 3; known: ['sam3']")
    settings = Sam3Settings.from_dict((overrides or {}).get("sam3"), f"{spec} overrides")
    return load_sam3_backend(spec, settings, device)
