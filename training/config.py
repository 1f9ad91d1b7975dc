"""Training recipes: dataclasses filled from ``training/<recipe>.yaml``.

A recipe names the model to start from, the datasets and their mixing ratios, the optimiser and its
schedule, LoRA, the loss weights, evaluation and checkpointing. Every field has the paper's default
(GLUS Sec. 4 / Table A) unless the recipe says otherwise, and unknown keys are errors, so a typo in a
recipe never silently trains with a default.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glus_ros.model.config import deep_update, read_yaml_mapping
from glus_ros.training.data import GROUNDED_KINDS

DATASET_KINDS = ("mevis", "refytvos", "synth", "synth_count")  # synth_count: the synthetic "how many" questions


@dataclass
class DatasetSpec:
    """One training (or evaluation) source in MeViS / Ref-YouTube-VOS / synthetic layout."""

    kind: str                  # "mevis" | "refytvos" | "synth" (the synthetic set is MeViS layout + synth_meta.json)
    root: str                  # folder holding <split>/ (relative paths are relative to the recipe's --data-root)
    split: str = "train"
    ratio: float = 1.0         # mixing weight (GLUS mixes MeViS and Ref-YouTube-VOS 1:1)
    videos: int | None = None  # synth only: generate this many videos if the split is missing
    seed: int | None = None    # synth only: generator seed of the split
    max_videos: int | None = None  # use only the first N videos (evaluation subsets)


@dataclass
class GroundedSpec:
    """GLaMM-style grounded samples (captions, "what is <region>?", "track <region>") mixed into training.

    Every ``every``-th optimiser step (``step % every == every - 1``) trains on grounded samples of a synthetic
    split (``synth_meta.json`` grounding keys) instead of referring clips, so one run learns both answers.
    """

    root: str                  # folder holding <split>/ (relative paths are relative to --data-root)
    split: str = "train"
    videos: int | None = None  # generate this many videos if the split is missing
    seed: int | None = None    # generator seed of the split
    every: int = 4
    kinds: list[str] = field(default_factory=lambda: list(GROUNDED_KINDS))


@dataclass
class LoraSpec:
    """LoRA on the LLM's attention projections (peft); used when ``llm_lora`` is a trainable group."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class OptimSpec:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "linear"        # decay after warm-up: "linear" (to min_lr_ratio), "cosine" or "constant"
    min_lr_ratio: float = 0.0
    batch_size: int = 2             # clips per micro-batch (per process)
    grad_accum: int = 10            # micro-batches per optimiser step
    max_steps: int = 1000           # optimiser steps
    grad_clip: float | None = 1.0


@dataclass
class AuxSpec:
    """Auxiliary supervision of the [SEG] state (not in the paper; needed to train a tiny LLM from scratch).

    ``point``: each [SEG] predicts its frame's target centre and visibility (from the masks, any dataset).
    ``attributes``: each [SEG] classifies the colour and shape of the target (synthetic data only).
    ``cells``: each visual token the LLM reads classifies the colour and shape of the object in its cell
    (synthetic data only; training/aux_heads.py says why).
    ``grounding``: BCE of the grounding map (model ``vlm.grounding_map``) against the cells the target
    covers; ``grounding_drop``: the share of batches decoded without the map, so SAM 2 also works from
    the sparse prompt alone (frames the MLLM did not see while streaming).
    ``grounding_pick``: cross entropy of the map's softmax over the cells against the target's cells: the
    BCE mostly teaches the empty cells, this one the choice between the target and its look-alikes.
    ``grounding_anchor``: cross entropy of the spatial terms' near / far anchors (``vlm.grounding_spatial``)
    against the cells of a relation expression's reference object (synthetic data only).
    ``motion``: the grounding map's motion field (``vlm.grounding_motion``) regresses how the object in
    each cell moves between the context frames (synthetic data only; ``SynthMotionCells``).
    """

    point: float = 0.0
    attributes: float = 0.0
    cells: float = 0.0
    grounding: float = 0.0
    grounding_drop: float = 0.0
    grounding_pick: float = 0.0
    grounding_anchor: float = 0.0
    motion: float = 0.0


@dataclass
class PointsSpec:
    """Pointing (VideoMolmo): point-head set loss and SAM 2 masks prompted by the true points.

    Needs a model with a point head (``model_overrides: {points: {}}``) and ``points`` trainable.
    """

    weight: float = 0.0
    mask_weight: float = 0.0


@dataclass
class KeyFrameSpec:
    """The key-frame selector stage, run after the main training on the first dataset's expressions."""

    enabled: bool = False
    expressions: int | None = 400   # pseudo-labelled expressions (None: all)
    epochs: int = 5
    lr: float = 1.0e-3
    hidden: int = 128
    kernel: int = 5


@dataclass
class VisionPretrainSpec:
    """Vision pre-training before the main stage (training/vision_pretrain.py says why); off by default.

    Trains on single frames of the recipe's first synthetic dataset.
    """

    enabled: bool = False
    steps: int = 5000
    batch_size: int = 32          # single frames per step
    lr: float = 1.0e-3            # Adam, constant (what was measured)
    held_out: int = 100           # the split's last N videos: never trained on, scored every eval_every steps
    eval_every: int = 250
    eval_frames: int = 256        # held-out frames scored (a fixed, seeded draw)
    offset_bins: int = 0          # > 0: tokens also learn where in their cell the object's centre lies

    def check(self, where: str) -> None:
        checks = [
            (self.offset_bins >= 0, f"offset_bins must be >= 0, got {self.offset_bins}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.held_out >= 1, f"held_out must be >= 1 (videos to score on), got {self.held_out}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.eval_frames >= 1, f"eval_frames must be >= 1, got {self.eval_frames}"),
        ]
        require(checks, where)


@dataclass
class MotionPretrainSpec:
    """Motion-field pre-training before the main stage (training/motion_pretrain.py says why); off by default.

    Trains on context clips of the recipe's first synthetic dataset; needs ``vlm.grounding_motion``.
    """

    enabled: bool = False
    steps: int = 1500
    batch_size: int = 32          # context clips per step
    lr: float = 1.0e-3            # Adam, constant (what was measured)
    held_out: int = 100           # the split's last N videos: never trained on, scored every eval_every steps
    eval_every: int = 250
    eval_clips: int = 128         # held-out clips scored (a fixed, seeded draw)

    def check(self, where: str) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.held_out >= 1, f"held_out must be >= 1 (videos to score on), got {self.held_out}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.eval_clips >= 1, f"eval_clips must be >= 1, got {self.eval_clips}"),
        ]
        require(checks, where)


@dataclass
class EvalSpec:
    dataset: DatasetSpec | None = None
    every_steps: int = 0            # 0: only at the end
    dtype: str = "fp32"


@dataclass
class TrainConfig:
    name: str
    model: str = "tiny"                 # model config name / YAML / trained model directory to start from
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {sampling: {num_context: 0}} (ablations)
    checkpoint: str | None = None       # official GLUS/LISA weights to start from
    sam2_checkpoint: str | None = None  # official SAM 2 .pt to start from
    trainable: list[str] | None = None  # parameter groups (default: the model config's split)
    datasets: list[DatasetSpec] = field(default_factory=list)
    grounded: GroundedSpec | None = None  # grounded batches mixed into the referring ones (GLaMM)
    samples_per_epoch: int = 1000
    positive_pairs: bool = False        # batches of (expression, another expression of its object set) pairs
    loss: dict[str, float] = field(default_factory=dict)  # LossWeights fields (ce, bce, dice, contrastive, temperature)
    visibility_weight: float = 1.0
    contrastive_bank: int = 256
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    aux: AuxSpec = field(default_factory=AuxSpec)
    key_frame: KeyFrameSpec = field(default_factory=KeyFrameSpec)
    vision_pretrain: VisionPretrainSpec = field(default_factory=VisionPretrainSpec)
    motion_pretrain: MotionPretrainSpec = field(default_factory=MotionPretrainSpec)
    points: PointsSpec = field(default_factory=PointsSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    output_dir: str = "runs/{name}"
    seed: int = 0
    device: str = "cpu"                 # "cpu", "cuda", "auto" (with accelerate launch: each process its own GPU)
    mixed_precision: str = "no"         # "no" | "bf16" (accelerate)
    save_every: int = 100               # optimiser steps between resumable checkpoints
    keep_checkpoints: int = 2
    log_every: int = 1
    num_workers: int = 0
    on_data_error: str = "skip"         # "skip" (warn + count) | "raise"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def output_path(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


def _check_keys(cls: type, raw: Any, where: str) -> None:
    """A mapping whose keys are all fields of ``cls``: a typo is an error, never a silent default."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")


def require(checks: list[tuple[bool, str]], where: str) -> None:
    """The first failed (ok, message) check is a ValueError naming where it was found."""
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{where}: {message}")


def _number(value: Any, where: str, key: str) -> Any:
    """A number given as text read as one: YAML 1.1 reads ``6e-4`` (no dot) as a string; text that is no
    number is an error naming the key, never a TypeError deep in the run. Other values pass unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: {key} must be a number, got {value!r}") from None


def _numbers(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with the float fields of ``cls`` read by :func:`_number`."""
    out = dict(raw)
    for f in dataclasses.fields(cls):
        if f.name in out and str(f.type).split(" |")[0] == "float":
            out[f.name] = _number(out[f.name], where, f.name)
    return out


def _build(cls: type, raw: Any, where: str) -> Any:
    _check_keys(cls, raw, where)
    return cls(**_numbers(cls, raw, where))


def _dataset(raw: Any, where: str) -> DatasetSpec:
    spec = _build(DatasetSpec, raw, where)
    if spec.kind not in DATASET_KINDS:
        raise ValueError(f"{where}: kind must be one of {list(DATASET_KINDS)}, got {spec.kind!r}")
    if not (isinstance(spec.ratio, (int, float)) and spec.ratio > 0):
        raise ValueError(f"{where}: ratio must be > 0, got {spec.ratio!r}")
    return spec


def _grounded(raw: Any, where: str) -> GroundedSpec:
    spec = _build(GroundedSpec, raw, where)
    every = spec.every
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"{where}: every must be an integer >= 1 (every k-th step is grounded), got {every!r}")
    kinds = spec.kinds
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
        raise ValueError(f"{where}: kinds must be a non-empty list of {list(GROUNDED_KINDS)}, got {kinds!r}")
    unknown = [k for k in kinds if k not in GROUNDED_KINDS]
    if unknown:
        raise ValueError(f"{where}: unknown kinds {unknown}; known: {list(GROUNDED_KINDS)}")
    spec.kinds = list(dict.fromkeys(kinds))
    return spec


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    raw = copy.deepcopy(raw)
    _check_keys(TrainConfig, raw, source)
    raw.setdefault("name", Path(source).stem)
    raw["datasets"] = [_dataset(d, f"{source}: datasets[{i}]") for i, d in enumerate(raw.get("datasets", []))]
    if not raw["datasets"]:
        raise ValueError(f"{source}: a recipe needs at least one entry under 'datasets'")
    if raw.get("grounded") is not None:
        raw["grounded"] = _grounded(raw["grounded"], f"{source}: grounded")
    for key, cls in (("lora", LoraSpec), ("optim", OptimSpec), ("aux", AuxSpec), ("key_frame", KeyFrameSpec),
                     ("points", PointsSpec), ("vision_pretrain", VisionPretrainSpec),
                     ("motion_pretrain", MotionPretrainSpec)):
        raw[key] = _build(cls, raw.get(key, {}), f"{source}: {key}")
    raw["vision_pretrain"].check(f"{source}: vision_pretrain")
    raw["motion_pretrain"].check(f"{source}: motion_pretrain")
    ev = dict(raw.get("eval", {}) or {})
    if ev.get("dataset") is not None:
        ev["dataset"] = _dataset(ev["dataset"], f"{source}: eval.dataset")
    raw["eval"] = _build(EvalSpec, ev, f"{source}: eval")
    loss = raw.get("loss") or {}
    if not isinstance(loss, dict):
        raise ValueError(f"{source}: loss: expected a mapping of term -> weight")
    for key, value in loss.items():
        loss[key] = _number(value, source, f"loss.{key}")
    cfg = TrainConfig(**_numbers(TrainConfig, raw, source))
    if cfg.mixed_precision is False:  # YAML 1.1 reads a bare `no` as false
        cfg.mixed_precision = "no"
    o = cfg.optim
    o.betas = (float(o.betas[0]), float(o.betas[1]))
    checks = [
        (o.lr > 0, f"optim.lr must be > 0, got {o.lr}"),
        (o.batch_size >= 1 and o.grad_accum >= 1, "optim.batch_size and optim.grad_accum must be >= 1"),
        (o.max_steps >= 1, f"optim.max_steps must be >= 1, got {o.max_steps}"),
        (o.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (o.schedule in ("linear", "cosine", "constant"), f"optim.schedule {o.schedule!r} not linear|cosine|constant"),
        (cfg.samples_per_epoch >= 1, "samples_per_epoch must be >= 1"),
        (not cfg.positive_pairs or o.batch_size % 2 == 0,
         f"positive_pairs needs an even optim.batch_size (whole pairs per batch), got {o.batch_size}"),
        (cfg.save_every >= 1, "save_every must be >= 1"),
        (cfg.mixed_precision in ("no", "bf16"), f"mixed_precision must be 'no' or 'bf16', got {cfg.mixed_precision!r}"),
        (cfg.on_data_error in ("skip", "raise"), "on_data_error must be 'skip' or 'raise'"),
        (cfg.lora.rank >= 1, "lora.rank must be >= 1"),
    ]
    require(checks, source)
    return cfg


def parse_override(text: str) -> dict[str, Any]:
    """``optim.lr=1e-4`` -> ``{"optim": {"lr": 1e-4}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value (e.g. optim.max_steps=10)")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r} has an empty key part")
    out: dict[str, Any] = {parts[-1]: yaml.safe_load(value)}
    for part in reversed(parts[:-1]):
        out = {part: out}
    return out


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training recipe {path} does not exist")
    raw = read_yaml_mapping(path)
    for text in overrides or []:
        raw = deep_update(raw, parse_override(text))
    return config_from_dict(raw, str(path))
