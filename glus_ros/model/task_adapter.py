"""Task adapters: LLM weight deltas (and the heads right after it) that switch on for one kind of request.

Why: the tiny default cannot learn "how many ...?" (exact counts, empty answers) without losing some
referring quality; an adapter trained on counting questions with the rest of the model frozen reaches the
count while referring keeps its exact weights. A model folder may hold ``adapters/<task>.safetensors``;
:func:`task_of` routes a request by the form of its text, and :meth:`TaskAdapter.applied` switches the
adapter on for one MLLM pass: LoRA deltas through forward hooks, and the task's own weights for the
heads that read the [SEG] state (``DENSE_MODULES``), swapped in and back. The base weights, the module
tree and the saved key layout stay as they are (no peft needed at inference).

File layout: ``llm.<module path in the LLM>.lora_A`` (rank, in) and ``.lora_B`` (out, rank) per adapted
``nn.Linear``, ``dense.<parameter path in the model>`` per replaced head weight; metadata ``task`` and
``scale`` (alpha / rank). An adapted layer returns ``base(x) + scale * B(A(x))``, as peft's LoRA does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

ADAPTERS_DIR = "adapters"
COUNTING = "counting"
# the request forms each task answers (first match wins); anything else runs on the base weights
TASK_PATTERNS: dict[str, re.Pattern[str]] = {
    COUNTING: re.compile(r"^\W*(how\s+many|count\b|what\s+is\s+the\s+number\s+of\b)", re.IGNORECASE),
}
TASKS = tuple(TASK_PATTERNS)
# heads that run inside the MLLM pass on its [SEG] states, so one request's pass may use its own copy
DENSE_MODULES = ("seg_projection", "grounding_map")


def task_of(expression: str) -> str | None:
    """The task whose adapter answers ``expression`` ("how many cups?" -> "counting"), or None."""
    for task, pattern in TASK_PATTERNS.items():
        if pattern.match(expression):
            return task
    return None


class AdapterError(ValueError):
    """An adapter file that cannot be read or does not fit the model: names the file."""


class TaskAdapter:
    """LoRA factors for named ``nn.Linear`` layers of an LLM, added while :meth:`applied` is active."""

    def __init__(self, task: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], scale: float,
                 dense: dict[str, torch.Tensor] | None = None) -> None:
        if task not in TASK_PATTERNS:
            raise ValueError(f"unknown adapter task {task!r}; known: {list(TASKS)}")
        if not factors:
            raise ValueError(f"the {task} adapter has no layers")
        for name, (a, b) in factors.items():
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise ValueError(f"{task} adapter, layer {name}: lora_A {tuple(a.shape)} and lora_B "
                                 f"{tuple(b.shape)} are not (rank, in) and (out, rank)")
        dense = dict(dense or {})
        outside = [n for n in dense if n.split(".", 1)[0] not in DENSE_MODULES]
        if outside:
            raise ValueError(f"{task} adapter replaces {outside[:3]}: only the weights of {list(DENSE_MODULES)} "
                             "may be replaced (they run inside the routed MLLM pass)")
        self.task = task
        self.factors = {name: (a.detach().float().cpu(), b.detach().float().cpu()) for name, (a, b) in factors.items()}
        self.dense = {name: t.detach().float().cpu() for name, t in dense.items()}
        self.scale = float(scale)
        self._placed: dict[tuple[torch.device, torch.dtype], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def rank(self) -> int:
        return int(next(iter(self.factors.values()))[0].shape[0])

    def check(self, model: nn.Module, source: str = "") -> None:
        """Every adapted layer / replaced weight exists in the GLUS ``model`` with a matching shape."""
        modules = dict(model.vlm.language_model.named_modules())
        params = dict(model.named_parameters())
        where = f"{source}: " if source else ""
        for name, (a, b) in self.factors.items():
            layer = modules.get(name)
            if not isinstance(layer, nn.Linear):
                raise AdapterError(f"{where}{self.task} adapter names layer '{name}', which the LLM has no "
                                   "Linear for (an adapter from a different model?)")
            if (a.shape[1], b.shape[0]) != (layer.in_features, layer.out_features):
                raise AdapterError(f"{where}{self.task} adapter layer '{name}' maps {a.shape[1]} -> {b.shape[0]}, "
                                   f"the model's {layer.in_features} -> {layer.out_features}")
        for name, value in self.dense.items():
            if name not in params:
                raise AdapterError(f"{where}{self.task} adapter replaces '{name}', which the model does not have")
            if tuple(params[name].shape) != tuple(value.shape):
                raise AdapterError(f"{where}{self.task} adapter weight '{name}' is {tuple(value.shape)}, the "
                                   f"model's {tuple(params[name].shape)}")

    def _on(self, device: torch.device, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        key = (device, dtype)
        if key not in self._placed:
            self._placed[key] = {n: (a.to(device, dtype), b.to(device, dtype)) for n, (a, b) in self.factors.items()}
        return self._placed[key]

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Within the block the GLUS ``model`` answers as adapted: every adapted LLM layer returns
        ``base(x) + scale * B(A(x))`` and the replaced head weights hold the task's values."""
        modules = dict(model.vlm.language_model.named_modules())
        params = dict(model.named_parameters())
        handles, saved = [], {}

        def hook_for(name: str):
            def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
                a, b = self._on(output.device, output.dtype)[name]
                return output + self.scale * F.linear(F.linear(inputs[0].to(output.dtype), a), b)
            return hook

        try:
            for name in self.factors:
                handles.append(modules[name].register_forward_hook(hook_for(name)))
            for name, value in self.dense.items():
                saved[name] = params[name].data
                params[name].data = value.to(saved[name].device, saved[name].dtype)
            yield
        finally:
            for handle in handles:
                handle.remove()
            for name, data in saved.items():
                params[name].data = data

    # --- files ------------------------------------------------------------------------------
    def save(self, path: Path, dtype: torch.dtype = torch.float32) -> Path:
        state = {}
        for name, (a, b) in self.factors.items():
            state[f"llm.{name}.lora_A"] = a.to(dtype).contiguous()
            state[f"llm.{name}.lora_B"] = b.to(dtype).contiguous()
        for name, value in self.dense.items():
            state[f"dense.{name}"] = value.to(dtype).contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"task": self.task, "scale": repr(self.scale)})
        return path

    @classmethod
    def load(cls, path: Path) -> TaskAdapter:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise AdapterError(f"{path}: cannot read safetensors: {exc}") from exc
        if "task" not in meta or "scale" not in meta:
            raise AdapterError(f"{path}: metadata lacks 'task' / 'scale' (not a task adapter file)")
        if meta["task"] != path.stem:
            raise AdapterError(f"{path}: holds the {meta['task']!r} adapter but is named for {path.stem!r}")
        lora = {k[len("llm."):]: v for k, v in state.items() if k.startswith("llm.")}
        dense = {k[len("dense."):]: v for k, v in state.items() if k.startswith("dense.")}
        names = sorted({k.rsplit(".", 1)[0] for k in lora})
        incomplete = [n for n in names if f"{n}.lora_A" not in lora or f"{n}.lora_B" not in lora]
        strays = [k for k in state if not k.startswith(("llm.", "dense."))]
        strays += [f"llm.{k}" for k in lora if not k.endswith((".lora_A", ".lora_B"))]
        if incomplete or strays:
            raise AdapterError(f"{path}: every layer needs an llm.<layer>.lora_A and .lora_B tensor, every "
                               f"replaced weight a dense.<name> (incomplete: {incomplete[:4]}, unknown: {strays[:4]})")
        try:
            return cls(meta["task"], {n: (lora[f"{n}.lora_A"], lora[f"{n}.lora_B"]) for n in names},
                       float(meta["scale"]), dense)
        except ValueError as exc:
            raise AdapterError(f"{path}: {exc}") from exc


def load_task_adapters(folder: Path, model: nn.Module) -> dict[str, TaskAdapter]:
    """The adapters a model folder holds (``adapters/*.safetensors``), checked against the GLUS ``model``."""
    adapters: dict[str, TaskAdapter] = {}
    directory = folder / ADAPTERS_DIR
    if not directory.is_dir():
        return adapters
    for path in sorted(directory.glob("*.safetensors")):
        adapter = TaskAdapter.load(path)
        adapter.check(model, str(path))
        adapters[adapter.task] = adapter
    return adapters


def save_task_adapters(adapters: dict[str, TaskAdapter], folder: Path, dtype: torch.dtype) -> list[Path]:
    return [adapter.save(folder / ADAPTERS_DIR / f"{task}.safetensors", dtype) for task, adapter in adapters.items()]


def routes(expressions: Sequence[str], adapters: dict[str, TaskAdapter]) -> list[str | None]:
    """Per expression, the task whose adapter runs it (None: the base weights)."""
    tasks = [task_of(e) for e in expressions]
    return [t if t in adapters else None for t in tasks]
