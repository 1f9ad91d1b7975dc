"""Which backend a ``--model`` names (glus, molmo2, sam3), without loading anything.

A module of its own so that the loaders of each backend (``inference.load_model`` for GLUS, ``backends.loading``
for the others) can ask it without importing each other. The rules (``backends.loading``'s docstring):

- a folder with ``config.json`` (a transformers model folder): its ``model_type`` decides (``molmo2``,
  ``sam3_video``); any other model_type is refused;
- a folder with ``config.yaml`` (a glus_ros model), a config name or a YAML file: its ``backend:`` key decides
  (absent: ``glus``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glus_ros.backends.base import BackendName
from glus_ros.backends.molmo2_folder import MOLMO2_MODEL_TYPE, folder_model_type
from glus_ros.backends.sam3_folder import SAM3_MODEL_TYPE
from glus_ros.model.config import read_yaml_mapping, resolve_config_path

BACKENDS: tuple[BackendName, ...] = ("glus", "molmo2", "sam3")
FOLDER_BACKENDS: dict[str, BackendName] = {MOLMO2_MODEL_TYPE: "molmo2", SAM3_MODEL_TYPE: "sam3"}


def _folder_backend(spec: str | Path) -> BackendName | None:
    """The backend of a transformers folder (config.json, no config.yaml); None for anything else."""
    path = Path(spec)
    if not path.is_dir() or (path / "config.yaml").is_file():
        return None
    model_type = folder_model_type(path)
    return None if model_type is None else FOLDER_BACKENDS.get(model_type)


def _backend_yaml(spec: str | Path) -> tuple[dict[str, Any], str] | None:
    """(raw YAML, its path) of a config spec, or None for a transformers folder (config.json, no config.yaml)."""
    path = Path(spec)
    if path.is_dir() and not (path / "config.yaml").is_file():
        model_type = folder_model_type(path)
        if model_type is None:
            raise FileNotFoundError(f"model folder {path} has neither config.yaml (a glus_ros model) nor "
                                    "config.json (a transformers model folder, e.g. Molmo2)")
        if model_type not in FOLDER_BACKENDS:
            raise ValueError(f"{path}/config.json: model_type {model_type!r} has no backend here "
                             f"(supported: {', '.join(map(repr, FOLDER_BACKENDS))})")
        return None
    if not path.exists() and (path.suffix in (".yaml", ".yml") or len(path.parts) > 1):
        raise FileNotFoundError(f"model {path} does not exist")
    config = resolve_config_path(spec)
    return read_yaml_mapping(config), str(config)


def backend_of(spec: str | Path) -> BackendName:
    """The backend a model spec names (see module doc); errors name the file."""
    found = _backend_yaml(spec)
    if found is None:
        return _folder_backend(spec) or "molmo2"
    raw, source = found
    backend = raw.get("backend", "glus")
    if backend not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {backend!r}; known: {list(BACKENDS)}")
    return backend
