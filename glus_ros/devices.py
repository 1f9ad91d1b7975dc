"""Where the model runs and in what precision: device names and dtype names as the CLI and the nodes give them.

A module of its own because every job needs it (offline segmentation, the streaming engine, the backends,
training) and none of them should have to import another job's module for two small helpers.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = ("fp32", "bf16")
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when there is one); a CUDA device without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available on this machine")
    return device


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA when asked; fp32 otherwise."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype != "bf16":
        raise ValueError(f"unknown dtype '{dtype}' (fp32 or bf16)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def weight_dtype(name: str) -> torch.dtype:
    """The torch dtype of weights stored in precision ``name`` (fp32 or bf16)."""
    if name not in WEIGHT_DTYPES:
        raise ValueError(f"unknown dtype {name!r} (fp32 or bf16)")
    return WEIGHT_DTYPES[name]
