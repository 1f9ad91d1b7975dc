"""The SAM 2 memory tracker on its own, for backends whose language model answers with points (Molmo2).

GLUS owns its SAM 2 head (``GLUSModel.sam``); a pointing backend has no SAM 2 of its own, so it carries
this: the same ``SAM2Head`` (built from a ``sam2:`` hydra node of a model YAML, so official SAM 2 ``.pt``
files load unchanged) and the same bounded memory bank. It offers exactly what the point propagation
(``glus_ros.points.propagation``) and ``FrameEncoder`` read from a model: ``sam``, ``cfg.memory``,
``device``, ``encode_sam_frames`` and ``new_memory_bank``.

``match_sam2_node`` picks the node for a checkpoint: the first of the project's model configs whose SAM 2
has exactly the checkpoint's tensor names and shapes (the models are built on the meta device, so even
hiera-L costs no memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glus_ros.model.config import MemoryConfig, model_config_dirs, read_yaml_mapping
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.sam2_head import FrameFeatures, SAM2Head, build_sam2


@dataclass
class TrackerConfig:
    sam2: dict[str, Any]
    memory: MemoryConfig = field(default_factory=MemoryConfig)


class SAM2Tracker(nn.Module):
    """SAM 2 image encoder + memory attention + decoder + memory encoder, with the project's memory bank."""

    def __init__(self, cfg: TrackerConfig) -> None:
        super().__init__()
        if not cfg.memory.enabled:
            raise ValueError("the SAM 2 tracker needs its memory: memory.enabled must be true")
        self.cfg = cfg
        self.sam = SAM2Head(cfg.sam2)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_sam_frames(self, sam_pixels: torch.Tensor) -> FrameFeatures:
        return self.sam.encode_images(sam_pixels)

    def new_memory_bank(self) -> MemoryBank:
        stride = self.cfg.memory.train_stride if self.training else self.cfg.memory.stride
        return MemoryBank(self.cfg.memory.slots, stride)


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (buffers and plain tensors stay real,
    so code that reads a tensor's value while building, as Hiera's drop-path schedule does, still works)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def parameter_shapes(node: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter and buffer of the SAM2Base a node builds (without allocating it)."""
    with _parameters_on_meta():
        module = build_sam2(node)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def sam2_nodes() -> list[tuple[str, dict[str, Any]]]:
    """(model config, its ``sam2:`` node) for every model config of the project, in name order."""
    nodes = []
    for folder in model_config_dirs():
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*/config.yaml")]):
            try:
                raw = read_yaml_mapping(path)
            except ValueError:
                continue
            if isinstance(raw.get("sam2"), dict):
                name = path.parent.name if path.name == "config.yaml" else path.stem
                nodes.append((name, raw["sam2"]))
    return nodes


def match_sam2_node(state: dict[str, torch.Tensor], source: Path) -> tuple[str, dict[str, Any]]:
    """The first project SAM 2 node whose tensors have exactly ``state``'s names and shapes.

    Keys only the checkpoint has (object-pointer weights of the official files, which this tracker does
    not read) are allowed; a node needing a key the checkpoint lacks, or of another shape, does not match.
    """
    wanted = {k: tuple(v.shape) for k, v in state.items()}
    tried: list[str] = []
    seen: list[dict[str, Any]] = []
    for name, node in sam2_nodes():
        tried.append(name)
        if node in seen:
            continue
        seen.append(node)
        shapes = parameter_shapes(node)
        if all(wanted.get(k) == shape for k, shape in shapes.items()):
            return name, node
    raise ValueError(f"{source}: no SAM 2 configuration of this project fits this checkpoint (tried the sam2 "
                     f"nodes of {', '.join(tried)}); give the backend config a 'sam2:' node that does")
