"""A fine-tune that changes the base weights keeps the start model's task adapters while they stay valid.

Why: a task adapter (``glus_ros.model.task_adapter``) is LoRA factors on the LLM's linear layers plus the task's
own copy of the heads on the [SEG] state, fitted to the start model's base. A fine-tune of that base (e.g. the
default on the robot's bags, ``training/robot_bags.yaml``) used to export without them. Measured instead
(docs/training.md, "Task adapters", the default's counting adapter, exact count on 12 unseen videos): after
the recipe's own fine-tunes, which move the weights under the adapter by 0.03-0.04 (relative,
:func:`base_change`), the adapter as it was lifts the fine-tuned model's count from 0.42-0.47 to 0.57-0.62
(the start model: 0.61) in all four runs; once a fine-tune moves them 0.07 or more (3-10x the recipe's
learning rate) it helped in two of four runs and cost counts in the other two. So the export carries each
adapter whose base moved at most ``MAX_BASE_CHANGE``, unchanged, and leaves out with a warning one whose base
moved more or that no longer fits the model (a head of another shape).

Unchanged, not rebased: moving the adapter's heads by the base heads' change (keeping the adapter a delta from
its base) was measured beside it and scored lower in 5 of 8 fine-tunes, among them all four the export carries.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from glus_ros.model.task_adapter import AdapterError, TaskAdapter

log = logging.getLogger(__name__)

# the largest base_change at which a start model's adapter is carried into the export (measured above)
MAX_BASE_CHANGE = 0.05


def _llm_layers(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.vlm.language_model.named_modules())


def start_weights(model: nn.Module, adapters: dict[str, TaskAdapter]) -> dict[str, torch.Tensor]:
    """Copies of the start GLUS ``model``'s base weights under its ``adapters``, keyed as in an adapter file:
    ``llm.<layer>`` for the weight of every LoRA layer, ``dense.<name>`` for every head weight they replace.
    Taken before training; :func:`carry_adapters` measures the fine-tune against them."""
    layers, params = _llm_layers(model), dict(model.named_parameters())
    out = {}
    for adapter in adapters.values():
        for name in adapter.factors:
            if isinstance(layers.get(name), nn.Linear):
                out[f"llm.{name}"] = layers[name].weight.detach().float().cpu().clone()
        for name in adapter.dense:
            if name in params:
                out[f"dense.{name}"] = params[name].detach().float().cpu().clone()
    return out


def base_change(adapter: TaskAdapter, start: dict[str, torch.Tensor], model: nn.Module) -> float:
    """How far the fine-tune moved what ``adapter`` was fitted to: ``sqrt(sum |W_new - W_old|^2 / sum |W_old|^2)``
    over the weights of its LoRA layers and of the base's heads it replaces. AdapterError when the fine-tuned
    ``model`` lacks one of them or has it in another shape."""
    layers, params = _llm_layers(model), dict(model.named_parameters())
    moved = size = 0.0
    for key, new in [*((f"llm.{n}", getattr(layers.get(n), "weight", None)) for n in adapter.factors),
                     *((f"dense.{n}", params.get(n)) for n in adapter.dense)]:
        old = start.get(key)
        if old is None or new is None or tuple(new.shape) != tuple(old.shape):
            raise AdapterError(f"{adapter.task} adapter: the fine-tuned model has no weight '{key.split('.', 1)[1]}' "
                               "of the start model's shape")
        moved += float((new.detach().float().cpu() - old).pow(2).sum())
        size += float(old.pow(2).sum())
    return (moved / size) ** 0.5 if size > 0 else 0.0


def carry_adapters(adapters: dict[str, TaskAdapter], start: dict[str, torch.Tensor], model: nn.Module,
                   max_change: float = MAX_BASE_CHANGE) -> dict[str, TaskAdapter]:
    """The start model's ``adapters`` that stay valid for the fine-tuned GLUS ``model`` (its LoRA, if any, merged):
    those whose :func:`base_change` is at most ``max_change`` and that fit it, unchanged; the others are left out
    with a warning that says why."""
    carried = {}
    for task, adapter in adapters.items():
        try:
            change = base_change(adapter, start, model)
            adapter.check(model)
        except AdapterError as exc:
            log.warning("the start model's %s adapter does not fit the fine-tuned model and is left out (retrain "
                        "it on the new model): %s", task, exc)
            continue
        if change > max_change:
            log.warning("the start model's %s adapter is left out: the fine-tune moved the weights under it by "
                        "%.3f (relative), beyond the %.3f up to which it measured useful (retrain it on the new "
                        "model)", task, change, max_change)
            continue
        carried[task] = adapter
        log.info("the start model's %s adapter is carried into the export (the weights under it moved by %.3f, "
                 "relative; carried up to %.3f)", task, change, max_change)
    return carried
