"""The GLUS training loop: recipe -> datasets -> optimiser steps, checkpoints, metrics, evaluation.

Scale-out goes through accelerate (``accelerate launch --config_file training/accelerate/ddp.yaml -m
glus_ros.cli train ...`` or ``torchrun`` runs the same loop data-parallel with DDP; N processes train as one
process accumulating their N micro-batches); on one CPU process it is a plain loop. Runs are exactly resumable: a
checkpoint holds the trainable weights, the optimiser, the
schedule, the contrastive bank, the RNG state and the data position (epoch, micro-batch), and every
sample is a pure function of (seed, epoch, index), so an interrupted run continued from its last
checkpoint ends with the same weights as one that never stopped.

With a ``grounded:`` recipe section, every k-th optimiser step trains on GLaMM-style grounded samples
(captions with a mask per phrase, region questions, "track <region>") instead of referring clips; they
have their own data order and position, saved in the checkpoint like the referring one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from glus_ros.data.grounding import GROUNDING_KEYS
from glus_ros.datasets.base import read_json
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.datasets.refytvos import RefYoutubeVosDataset
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.model.glus import GLUSModel
from glus_ros.model.task_adapter import TaskAdapter
from glus_ros.training.aux_heads import (
    AuxHeads,
    SynthCellLabels,
    SynthMotionCells,
    SynthReferenceCells,
    synth_attribute_labels,
)
from glus_ros.training.config import SYNTHETIC_KINDS, DatasetSpec, GroundedSpec, TrainConfig
from glus_ros.training.data import (
    GivenExpressions,
    GroundedClipDataset,
    MixedClipDataset,
    ObjectKeyRegistry,
    ReferringClipDataset,
    VideoSubset,
    make_collate,
    make_grounded_collate,
)
from glus_ros.training.lora import add_lora, extract_lora, merge_lora
from glus_ros.training.losses import LossWeights, SegTokenBank
from glus_ros.training.release_batch import ReleaseBatch, collate_release
from glus_ros.training.release_data import ReleaseClipDataset
from glus_ros.training.release_step import ReleaseSegBank, release_losses
from glus_ros.training.step import forward_clips, forward_grounded

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "trainable.safetensors"
# option modules that start as the identity: switched on by an override but left frozen, they do nothing
IDENTITY_AT_INIT = ("temporal",)
VISION_DIR = "vision_pretrain"  # <out>/vision_pretrain/: the vision stage's weights and metrics.csv
MOTION_DIR = "motion_pretrain"  # <out>/motion_pretrain/: the motion-field stage's weights and metrics.csv
LOG_TERMS = ("total", "ce", "bce", "dice", "contrastive", "visibility", "aux_point", "aux_attributes", "points",
             "point_masks", "grounding", "grounding_pick", "grounding_anchor", "motion", "aux_cells")
BATCH_KIND = "batch_kind"  # batch key: "grounded" routes the batch to forward_grounded, anything else is referring


class TrainingModule(nn.Module):
    """What accelerate wraps (DDP needs one ``forward``): the model plus training-only heads -> losses."""

    def __init__(self, model: GLUSModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        use_aux = cfg.aux.point > 0 or cfg.aux.attributes > 0 or cfg.aux.cells > 0
        self.aux_heads = AuxHeads(model.vlm.hidden_size, cells=cfg.aux.cells > 0) if use_aux else None
        self.weights = LossWeights(**cfg.loss)
        self.visibility_weight = cfg.visibility_weight
        self.aux_weights = (cfg.aux.point, cfg.aux.attributes, cfg.aux.cells)
        self.point_weights = (cfg.points.weight, cfg.points.mask_weight)
        self.grounding = (cfg.aux.grounding, cfg.aux.grounding_drop, cfg.aux.grounding_pick,
                          cfg.aux.grounding_anchor, cfg.aux.motion)

    def forward(self, batch: dict[str, Any] | ReleaseBatch,
                seg_bank: SegTokenBank | ReleaseSegBank | None = None) -> dict[str, torch.Tensor]:
        # one forward for every batch kind: DDP wraps this module once and syncs whichever path ran
        if isinstance(batch, ReleaseBatch):  # the released weights: the official step (python's random draws the
            # contrastive negatives, as officially; its state is saved with every checkpoint)
            assert seg_bank is None or isinstance(seg_bank, ReleaseSegBank)
            losses = release_losses(self.model, batch, self.weights, seg_bank, random)  # type: ignore[arg-type]
            losses.pop("seg_embeddings")
            return losses
        assert isinstance(seg_bank, SegTokenBank | None)
        if batch.get(BATCH_KIND) == "grounded":
            return forward_grounded(self.model, batch, self.weights, self.visibility_weight)
        return forward_clips(self.model, batch, self.weights, seg_bank, self.visibility_weight,
                             self.aux_heads, self.aux_weights, self.point_weights, self.grounding)


def dataset_root(spec: DatasetSpec | GroundedSpec, data_root: Path) -> Path:
    """The folder holding a recipe entry's split (relative roots are relative to ``--data-root``)."""
    root = Path(spec.root)
    return root if root.is_absolute() else data_root / root


def synth_split_dir(spec: DatasetSpec | GroundedSpec, data_root: Path, generate: bool = True) -> Path:
    """The split folder of a recipe entry; a missing synthetic split is generated first (``generate``)."""
    root = dataset_root(spec, data_root)
    split_dir = root / spec.split
    if generate and not (split_dir / "meta_expressions.json").is_file():
        if spec.videos is None or spec.seed is None:
            raise FileNotFoundError(f"synthetic split {split_dir} is missing and the recipe gives no videos/seed "
                                    "to generate it")
        from glus_ros.data.synth import SynthConfig, write_split

        log.info("generating synthetic split %s (%d videos, seed %d)", split_dir, spec.videos, spec.seed)
        write_split(root, spec.split, spec.videos, spec.seed, SynthConfig())
    return split_dir


def open_reader(spec: DatasetSpec, data_root: Path) -> tuple[Any, Path]:
    """The dataset reader of a recipe entry; a missing synthetic split is generated first."""
    split_dir = synth_split_dir(spec, data_root, generate=spec.kind in SYNTHETIC_KINDS)
    root = dataset_root(spec, data_root)
    reader: Any = RefYoutubeVosDataset(root, spec.split) if spec.kind == "refytvos" else MevisDataset(root, spec.split)
    if spec.kind == "synth_count":
        from glus_ros.data.grounding import count_expressions

        reader = GivenExpressions(reader, count_expressions(split_dir))
    if spec.max_videos is not None:
        reader = VideoSubset(reader, spec.max_videos)
    return reader, split_dir


def check_grounding_keys(split_dir: Path) -> None:
    """Fail early, naming the file, when a split predates the grounding data (the dataset would fail mid-run)."""
    path = split_dir / "synth_meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"grounded: {path} does not exist; grounded samples need a synthetic split written "
                                "by `glus-ros synth` (or give grounded.videos/seed to generate one)")
    data = read_json(path)
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict) or not videos:
        raise ValueError(f"grounded: {path} has no 'videos' mapping; regenerate the split with `glus-ros synth`")
    for video, entry in videos.items():
        missing = [k for k in GROUNDING_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(
                f"grounded: {path} has no grounding keys {missing} (video {video!r}): the split was written before "
                f"the generator made grounding data; regenerate it (`glus-ros synth --out {split_dir.parent} "
                f"--split {split_dir.name} --videos N --seed S --overwrite`, same seed: the other files come out "
                "byte-identical)"
            )


def check_launch(num_processes: int) -> None:
    """Refuse the launch that asked for several processes and got one: ``accelerate launch --cpu
    --num_processes N`` starts a single process (accelerate's multi-CPU path is mpirun with a hostfile), which
    would otherwise train alone, silently, with the batch of one process."""
    cpu_launch = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    asked = cpu_launch and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ
    if asked and num_processes == 1:
        raise RuntimeError(
            "accelerate launch --cpu starts one process whatever --num_processes says; for several processes on "
            "CPU run `torchrun --nproc_per_node N -m glus_ros.cli train ...` or `accelerate launch --multi_gpu "
            "--num_processes N -m glus_ros.cli train ...` with `device: cpu` in the recipe (gloo)")


def is_release_recipe(cfg: TrainConfig) -> bool:
    """Whether the recipe starts from a model of the released GLUS weights' format (``loop.prompt_format:
    llava_v1``): it trains with the official step (release_step.py) on official samples (release_data.py)."""
    from glus_ros.model.config import load_config

    folder = Path(cfg.model)
    if folder.is_dir() and (folder / "config.yaml").is_file():
        return load_config(folder / "config.yaml", cfg.model_overrides or None).loop.prompt_format == "llava_v1"
    return load_config(cfg.model, cfg.model_overrides or None).loop.prompt_format == "llava_v1"


def may_skip_heads(cfg: TrainConfig) -> bool:
    """Whether some step of this recipe can leave a trainable head out of its loss (DDP must then look for
    unused parameters every step): grounded steps skip the referring-only heads, attribute CE needs a sample
    with one colour / shape, ``grounding_drop`` decodes without the map, anchor / motion terms skip batches
    without synthetic labels, point-prompted masks skip batches with no visible point."""
    a = cfg.aux
    non_synthetic = any(d.kind not in SYNTHETIC_KINDS for d in cfg.datasets)
    return (cfg.grounded is not None or a.attributes > 0 or a.grounding_drop > 0 or cfg.points.mask_weight > 0
            or cfg.points.weight > 0 or (non_synthetic and (a.grounding_anchor > 0 or a.motion > 0)))


def never_in_loss(module: nn.Module) -> list[str]:
    """Trainable parameters (names in ``module``, a :class:`TrainingModule`) that no training loss reads, by
    construction: the vision tower's layers after the feature layer and its final norm (the LLM reads
    ``hidden_states[vision_feature_layer]``), SAM 2's IoU head (no IoU loss; single-mask output), its
    ``no_mem_pos_enc`` (SAM 2 never reads it), the mask-prompt downscaler of a model without a grounding
    map (with one and no ``grounding_drop``: the no-mask embedding), and the colour / shape heads of a recipe
    without the attribute term. They stay in the optimiser (no gradient: Adam leaves them) but DDP must not wait
    for them.
    ``test_trainer_ddp.py`` checks the list against real backward passes."""
    model: GLUSModel = module.model  # type: ignore[assignment]
    prefix = {id(m): n for n, m in module.named_modules()}
    owners: list[nn.Module] = []
    tower = model.vlm.vision_tower
    encoder = getattr(tower, "encoder", None) or getattr(getattr(tower, "vision_model", None), "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is not None:
        k = model.cfg.vlm.vision_feature_layer
        first_unused = k if k >= 0 else len(layers) + 1 + k
        owners += list(layers)[first_unused:]
    owners += [m for n, m in tower.named_modules() if n.endswith("post_layernorm")]
    sam = model.sam.sam
    owners.append(sam.sam_mask_decoder.iou_prediction_head)
    if model.grounding_map is None:  # no mask prompt, ever
        owners.append(sam.sam_prompt_encoder.mask_downscaling)
    elif module.grounding[1] <= 0:  # the map is the mask prompt of every batch: "no mask" is never embedded
        owners.append(sam.sam_prompt_encoder.no_mask_embed)
    aux = getattr(module, "aux_heads", None)
    if aux is not None and module.aux_weights[1] <= 0:  # attribute labels are only loaded for that term
        owners += [aux.colour, aux.shape]
    names = [f"{prefix[id(m)]}.{n}" for m in owners for n, p in m.named_parameters() if p.requires_grad]
    if sam.no_mem_pos_enc.requires_grad:
        names.append(next(n for n, p in module.named_parameters() if p is sam.no_mem_pos_enc))
    return names


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then linear / cosine decay to ``min_lr_ratio`` at ``max_steps`` (or constant)."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    span = max(1, o.max_steps - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / span)
    shape = 1.0 - progress if o.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape


@dataclass
class DataPosition:
    epoch: int = 0
    batch: int = 0   # micro-batches of this epoch already consumed


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path | None
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)  # per step: numbers, and "batch" (its kind)
    evals: list[dict[str, float]] = field(default_factory=list)
    key_frame: dict[str, float] | None = None


class Trainer:
    def __init__(self, cfg: TrainConfig, data_root: Path | None = None, output_dir: Path | None = None,
                 progress: bool = True) -> None:
        from accelerate import Accelerator

        self.cfg = cfg
        self.data_root = Path(data_root) if data_root is not None else Path.cwd()
        self.out = Path(output_dir) if output_dir is not None else cfg.output_path()
        self.progress = progress
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("recipe asks for device 'cuda' but CUDA is not available on this machine")
        from accelerate.utils import DistributedDataParallelKwargs

        # DDP reduces every gradient it expects; a step that legitimately leaves a head out needs the
        # per-step search for unused parameters (docs/training.md has its measured cost)
        # (the release step leaves SAM 2's object-score head and the extra mask outputs out of every loss)
        self.release = is_release_recipe(cfg)
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=may_skip_heads(cfg) or self.release)]
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision, kwargs_handlers=handlers)
        check_launch(self.accelerator.num_processes)
        if self.accelerator.distributed_type.value in ("DEEPSPEED", "FSDP"):
            # both partition the optimiser state: a checkpoint from the main process alone would hold 1/N of it,
            # and DeepSpeed does its own accumulation and clipping (docs/training.md, "Several GPUs")
            raise NotImplementedError(f"{self.accelerator.distributed_type.value} is not supported by the trainer "
                                      "yet: use DDP (training/accelerate/ddp.yaml)")
        self.step = 0
        self.position = DataPosition()
        self.grounded_position = DataPosition()
        self._seed_everything(cfg.seed)
        self.vision_pretrain: list[dict[str, float]] = []  # the vision stage's evaluation rows, when it ran here
        self.motion_pretrain: list[dict[str, float]] = []  # the motion-field stage's rows, when it ran here
        self.model = self._build_model()
        self.module = TrainingModule(self.model, cfg)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.num_trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                          weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.ddp_ignored: list[str] = []
        if self.accelerator.num_processes > 1:  # parameters no loss reads: DDP must not wait for their gradients
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_ignored = never_in_loss(self.module)
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.module, self.ddp_ignored)
        self.module, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)
        self.dataset: MixedClipDataset | ReleaseClipDataset = self._build_data()
        self.seg_bank: SegTokenBank | ReleaseSegBank | None = None
        if LossWeights(**cfg.loss).contrastive > 0:
            self.seg_bank = (ReleaseSegBank(self.dataset.positive_table(), cfg.contrastive_bank)
                             if isinstance(self.dataset, ReleaseClipDataset) else SegTokenBank(cfg.contrastive_bank))
        self.grounded = self._build_grounded()

    # --- construction -----------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _build_model(self) -> GLUSModel:
        from glus_ros.inference import load_model

        cfg = self.cfg
        model = load_model(cfg.model, cfg.checkpoint, cfg.sam2_checkpoint, device="cpu",
                           overrides=cfg.model_overrides or None, vision_tower=cfg.vision_tower)
        # the start model's task adapters sit out of training (they route some samples otherwise); an adapter
        # recipe keeps the others in its export, a recipe that changes the base carries them over (see export)
        from glus_ros.training.adapter_carry import start_weights

        self.start_adapters, model.task_adapters = model.task_adapters, {}
        self.start_weights = start_weights(model, self.start_adapters)  # the base weights under them
        dense = cfg.adapter.dense if cfg.adapter is not None else []
        self.start_dense = {k: v.clone() for k, v in model.state_dict().items() if k.split(".", 1)[0] in dense}
        synthetic = any(d.kind in SYNTHETIC_KINDS for d in cfg.datasets)
        vlm = model.cfg.vlm
        for term, weight, option, has_it in (
                ("aux.grounding_anchor", cfg.aux.grounding_anchor, "grounding_spatial: true", vlm.grounding_spatial),
                ("aux.motion", cfg.aux.motion, "grounding_motion: 4", bool(vlm.grounding_motion))):
            if weight <= 0:
                continue
            if not has_it:  # the map's anchors / motion field: labels from synth_meta.json
                raise ValueError(f"{term} trains a part of the grounding map this model lacks: it needs "
                                 f"vlm.{option.split(':')[0]} (e.g. model_overrides: {{vlm: {{{option}}}}})")
            if not synthetic:
                raise ValueError(f"{term} needs a synthetic dataset (kind synth or synth_count): its labels come "
                                 "from synth_meta.json")
        if cfg.vision_pretrain.enabled:
            model.to(self.accelerator.device)
            self._pretrain_vision(model)
            self._seed_everything(cfg.seed)  # the main stage starts alike whether the vision stage ran or was cached
        if cfg.motion_pretrain.enabled:
            if not model.cfg.vlm.grounding_motion:
                raise ValueError("motion_pretrain trains the grounding map's motion field: the model needs "
                                 "vlm.grounding_motion (e.g. model_overrides: {vlm: {grounding_motion: 4}})")
            model.to(self.accelerator.device)
            self._pretrain_motion(model)
            self._seed_everything(cfg.seed)
        groups = list(cfg.trainable if cfg.trainable is not None else model.cfg.trainable)
        model.apply_trainable([g for g in groups if g != "llm_lora"])
        table = model.parameter_groups()
        for group in IDENTITY_AT_INIT:
            if table[group] and group not in groups:
                log.warning("the model has a '%s' module but 'trainable' does not list it: it stays as loaded "
                            "(a new one is the identity) - add '%s' to the recipe's trainable groups", group, group)
        if "llm_lora" in groups:
            if "llm" in groups:
                raise ValueError("trainable groups 'llm' and 'llm_lora' exclude each other (full LLM or LoRA)")
            add_lora(model.vlm.language_model, cfg.lora)
        if cfg.gradient_checkpointing:  # the official training's memory saver (recomputes each layer in backward)
            model.vlm.language_model.activation_checkpointing_enable({"use_reentrant": False})
        for name in cfg.adapter.dense if cfg.adapter is not None else ():
            head = getattr(model, name)
            if head is None:
                raise ValueError(f"adapter.dense names '{name}', which this model does not have")
            head.requires_grad_(True)
        return model.to(self.accelerator.device).train()

    def _pretrain_vision(self, model: GLUSModel) -> None:
        """The ``vision_pretrain`` stage, once per output folder (see :meth:`_cached_stage`)."""
        from glus_ros.training.vision_pretrain import load_vision_state, pretrain_vision, vision_state

        def run(reader: Any, split_dir: Path, on_row: Callable[[dict[str, float]], None]) -> None:
            labels = SynthCellLabels(split_dir, round(model.cfg.vlm.tokens_per_frame**0.5),
                                     self.cfg.vision_pretrain.offset_bins)
            self.vision_pretrain = pretrain_vision(model, reader, labels, self.cfg.vision_pretrain, self.cfg.seed,
                                                   self.cfg.on_data_error, self.progress, on_row=on_row)

        self._cached_stage("vision_pretrain", VISION_DIR, run, lambda: vision_state(model),
                           lambda state: load_vision_state(model, state))

    def _pretrain_motion(self, model: GLUSModel) -> None:
        """The ``motion_pretrain`` stage, once per output folder (see :meth:`_cached_stage`)."""
        from glus_ros.training.motion_pretrain import load_motion_state, motion_state, pretrain_motion

        def run(reader: Any, split_dir: Path, on_row: Callable[[dict[str, float]], None]) -> None:
            labels = SynthMotionCells(split_dir, round(model.cfg.vlm.tokens_per_frame**0.5))
            self.motion_pretrain = pretrain_motion(model, reader, labels, self.cfg.motion_pretrain, self.cfg.seed,
                                                   self.cfg.on_data_error, self.progress, on_row=on_row)

        self._cached_stage("motion_pretrain", MOTION_DIR, run, lambda: motion_state(model),
                           lambda state: load_motion_state(model, state))

    def _cached_stage(self, name: str, folder: str,
                      run: Callable[[Any, Path, Callable[[dict[str, float]], None]], None],
                      state: Callable[[], dict[str, torch.Tensor]],
                      load: Callable[[dict[str, torch.Tensor]], None]) -> None:
        """A pre-training stage on the recipe's first synthetic dataset, run once per output folder: its weights
        are cached in ``<out>/<folder>/`` (with its metrics.csv) and reused on a re-run or ``--resume`` (the
        main stage's checkpoints hold those weights only when their group is trainable)."""
        cache = self.out / folder / WEIGHTS_FILE
        with self.accelerator.main_process_first():
            if not cache.is_file() and self.accelerator.is_main_process:
                spec = next((d for d in self.cfg.datasets if d.kind in SYNTHETIC_KINDS), None)
                if spec is None:
                    raise ValueError(f"{name} needs a synthetic dataset (kind synth or synth_count) in 'datasets': "
                                     "its labels come from synth_meta.json")
                reader, split_dir = open_reader(spec, self.data_root)
                csv_path = self.out / folder / "metrics.csv"
                csv_path.unlink(missing_ok=True)  # rows of an interrupted earlier attempt
                csv_path.parent.mkdir(parents=True, exist_ok=True)
                run(reader, split_dir, lambda row: _append_csv(csv_path, row))
                tmp = cache.with_name(cache.name + ".tmp")
                save_file(state(), str(tmp))
                tmp.rename(cache)
            else:
                log.info("%s: using the cached weights in %s", name.replace("_", " "), cache)
                load(load_file(str(cache)))

    def _build_data(self) -> MixedClipDataset | ReleaseClipDataset:
        cfg, mcfg = self.cfg, self.model.cfg
        if self.release:  # the official draw: a video, up to 3 of its expressions, 4 context + 4 query frames
            sources = [(open_reader(spec, self.data_root)[0], spec.ratio,
                        "mevis" if spec.kind in ("mevis", *SYNTHETIC_KINDS) else spec.kind) for spec in cfg.datasets]
            return ReleaseClipDataset(sources, cfg.samples_per_epoch, seed=cfg.seed,
                                      num_query=mcfg.sampling.num_query)
        registry = ObjectKeyRegistry()
        parts = []
        for spec in cfg.datasets:
            reader, split_dir = open_reader(spec, self.data_root)
            labels = None
            cells = None
            if spec.kind in SYNTHETIC_KINDS and cfg.aux.cells > 0:
                side = round(mcfg.vlm.tokens_per_frame**0.5)
                cells = SynthCellLabels(split_dir, side)
            if spec.kind == "synth" and cfg.aux.attributes > 0:
                labels = synth_attribute_labels(split_dir, reader.expressions())
            references = None
            if spec.kind in SYNTHETIC_KINDS and cfg.aux.grounding_anchor > 0:
                references = SynthReferenceCells(split_dir, round(mcfg.vlm.tokens_per_frame**0.5))
            moves = None
            if spec.kind in SYNTHETIC_KINDS and cfg.aux.motion > 0:
                moves = SynthMotionCells(split_dir, round(mcfg.vlm.tokens_per_frame**0.5))
            ds = ReferringClipDataset(reader, f"{spec.kind}:{spec.root}:{spec.split}", mcfg.sampling.num_context,
                                      mcfg.sampling.num_query, seed=cfg.seed, on_error=cfg.on_data_error,  # type: ignore[arg-type]
                                      registry=registry, attribute_labels=labels,
                                      object_points=cfg.points.weight > 0 or cfg.points.mask_weight > 0,
                                      cell_labels=cells, reference_cells=references, motion_cells=moves)
            parts.append((ds, spec.ratio))
        return MixedClipDataset(parts, cfg.samples_per_epoch, seed=cfg.seed, positive_pairs=cfg.positive_pairs)

    def _build_grounded(self) -> GroundedClipDataset | None:
        """The recipe's grounded samples (``grounded:``), or None; a missing split is generated like synth ones."""
        spec = self.cfg.grounded
        if spec is None:
            return None
        split_dir = synth_split_dir(spec, self.data_root)
        check_grounding_keys(split_dir)
        sampling = self.model.cfg.sampling
        return GroundedClipDataset(dataset_root(spec, self.data_root), spec.split, f"grounded:{spec.root}:{spec.split}",
                                   sampling.num_context, sampling.num_query, seed=self.cfg.seed, kinds=spec.kinds)

    def is_grounded_step(self, step: int) -> bool:
        """Whether optimiser step ``step`` (0-based) trains on grounded samples: every k-th, ``step % k == k - 1``."""
        spec = self.cfg.grounded
        return spec is not None and step % spec.every == spec.every - 1

    # --- data order -------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int, size: int | None = None, stream: str = "order") -> list[list[int]]:
        """This process's micro-batches of an epoch: a seeded permutation, sharded by process rank.

        ``stream`` names the order (``order`` for the referring mix, ``grounded`` for grounded samples), so the
        two sources never share a permutation; ``size`` is the source's length (default: the referring mix).
        With ``positive_pairs`` the referring mix is shuffled and sharded in pairs (2i, 2i + 1), which stay
        side by side in one batch.
        """
        unit = 2 if stream == "order" and self.cfg.positive_pairs else 1
        units = list(range((len(self.dataset) if size is None else size) // unit))
        random.Random(f"{stream}:{self.cfg.seed}:{epoch}").shuffle(units)
        order = [u * unit + i for u in units for i in range(unit)]
        # global micro-batch g is order[g * bs * n : (g + 1) * bs * n], process r takes its r-th slice of bs: the
        # n processes together see exactly the micro-batches of one process with batch_size bs * n
        bs, n, rank = self.cfg.optim.batch_size, self.accelerator.num_processes, self.accelerator.process_index
        width = bs * n
        return [order[g + rank * bs: g + (rank + 1) * bs] for g in range(0, len(order) - width + 1, width)]

    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        """Endless micro-batches from the saved position on; ``self.position`` tracks what was consumed."""
        mcfg = self.model.cfg
        collate: Callable[[list[Any]], Any] = make_collate(mcfg.vlm.image_size, mcfg.sam_image_size)
        if self.release:
            collate = functools.partial(collate_release, tokenizer=self.model.tokenizer)
        while True:
            batches = self._epoch_batches(self.position.epoch)
            if not batches:
                raise ValueError(f"samples_per_epoch {len(self.dataset)} is smaller than one batch "
                                 f"({self.cfg.optim.batch_size} x {self.accelerator.num_processes} processes)")
            self.dataset.set_epoch(self.position.epoch)
            loader = DataLoader(self.dataset, batch_sampler=batches[self.position.batch:], collate_fn=collate,
                                num_workers=self.cfg.num_workers)
            for batch in loader:
                self.position.batch += 1
                yield batch
            self.position = DataPosition(self.position.epoch + 1, 0)

    def _grounded_micro_batches(self) -> Iterator[dict[str, Any]]:
        """Endless grounded micro-batches from ``self.grounded_position`` on (its own epochs and order)."""
        assert self.grounded is not None
        mcfg = self.model.cfg
        collate = make_grounded_collate(mcfg.vlm.image_size, mcfg.sam_image_size)
        while True:
            batches = self._epoch_batches(self.grounded_position.epoch, len(self.grounded), "grounded")
            if not batches:
                raise ValueError(f"grounded split has {len(self.grounded)} samples, fewer than one batch "
                                 f"({self.cfg.optim.batch_size} x {self.accelerator.num_processes} processes)")
            self.grounded.set_epoch(self.grounded_position.epoch)
            loader = DataLoader(self.grounded, batch_sampler=batches[self.grounded_position.batch:],
                                collate_fn=collate, num_workers=self.cfg.num_workers)
            for batch in loader:
                self.grounded_position.batch += 1
                batch[BATCH_KIND] = "grounded"
                yield batch
            self.grounded_position = DataPosition(self.grounded_position.epoch + 1, 0)

    # --- checkpoints ------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        module = self.accelerator.unwrap_model(self.module)
        return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        """``<out>/checkpoints/step_<n>/``: written to a temp folder and renamed, so a kill never leaves half.

        Every process must call it (the processes' contrastive banks differ and are gathered); the main process
        writes, the others wait until the folder is complete, so a resume of any of them finds it.
        """
        banks = [self.seg_bank.state_dict()] if self.seg_bank is not None else [None]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            banks = gather_object(banks)
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return self.out
        folder = self.out / "checkpoints" / f"step_{self.step:07d}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(self._trainable_state(), str(tmp / WEIGHTS_FILE))
        torch.save({
            "step": self.step, "epoch": self.position.epoch, "batch": self.position.batch,
            "grounded_epoch": self.grounded_position.epoch, "grounded_batch": self.grounded_position.batch,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "seg_bank": banks[0], "seg_banks": banks,  # seg_banks: one per process (rank order)
            "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "numpy_rng": np.random.get_state(),
            "recipe": self.cfg.to_dict(),
        }, tmp / STATE_FILE)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        kept = sorted(p for p in folder.parent.glob("step_*") if not p.name.endswith(".tmp"))
        for old in kept[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        if self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        folder = Path(folder)
        for name in (WEIGHTS_FILE, STATE_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"checkpoint {folder} has no {name}")
        weights = load_file(str(folder / WEIGHTS_FILE))
        module = self.accelerator.unwrap_model(self.module)
        params = dict(module.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise ValueError(f"checkpoint {folder} does not match this recipe's trainable parameters: "
                             f"missing {missing[:5]}, unexpected {extra[:5]}")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        banks = state.get("seg_banks") or [state["seg_bank"]]
        # each process continues with its own bank; a run resumed on another process count takes the main one's
        bank = banks[self.accelerator.process_index] if len(banks) == self.accelerator.num_processes else banks[0]
        if self.seg_bank is not None and bank is not None:
            self.seg_bank.load_state_dict(bank, self.accelerator.device)
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        self.step = int(state["step"])
        self.position = DataPosition(int(state["epoch"]), int(state["batch"]))
        # checkpoints from before grounded batches existed hold no grounded position: start it from the beginning
        self.grounded_position = DataPosition(int(state.get("grounded_epoch", 0)), int(state.get("grounded_batch", 0)))
        for name in ("metrics.csv", "eval.csv"):  # rows the interrupted run wrote after this checkpoint
            _truncate_csv(self.out / name, self.step)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", folder, self.step, *vars(self.position).values())

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in (self.out / "checkpoints").glob("step_*") if not p.name.endswith(".tmp"))
        return found[-1] if found else None

    # --- evaluation and export --------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        """J&F of the current weights on the recipe's held-out split (main process only)."""
        spec = self.cfg.eval.dataset
        if spec is None or not self.accelerator.is_main_process:
            return None
        from glus_ros.evaluation import evaluate_predictions
        from glus_ros.inference import predict_dataset

        reader, _ = open_reader(spec, self.data_root)
        model = self.accelerator.unwrap_model(self.module).model
        with tempfile.TemporaryDirectory(prefix="glus_eval_") as tmp:
            predict_dataset(model, reader, Path(tmp), dtype=self.cfg.eval.dtype, progress=False)
            result = evaluate_predictions(tmp, reader)
        model.train()
        return {"step": self.step, "j": result.j, "f": result.f, "j_and_f": result.j_and_f,
                "expressions": result.num_expressions}

    def train_key_frame_selector(self, model_dir: Path | None = None) -> dict[str, float]:
        """The selector stage on an exported model: pseudo-labels, fit, save back into the model folder."""
        from glus_ros.inference import load_model
        from glus_ros.model.config import KeyFrameConfig
        from glus_ros.training.key_frame import pseudo_labels, selection_quality, train_selector

        spec = self.cfg.key_frame
        model_dir = Path(model_dir) if model_dir is not None else self.out / "model"
        if not (model_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"no trained model in {model_dir}: run the main training first")
        model = load_model(model_dir, device=str(self.accelerator.device))
        reader, _ = open_reader(self.cfg.datasets[0], self.data_root)
        examples = pseudo_labels(model, reader, spec.expressions, self.cfg.seed, self.progress)
        history = train_selector(model, reader, examples, spec.epochs, spec.lr,
                                 KeyFrameConfig(spec.hidden, spec.kernel), self.cfg.seed, self.progress)
        held_out = examples[: max(1, len(examples) // 10)]
        quality = selection_quality(model, reader, held_out)
        save_model_dir(model.cpu(), model_dir)
        (model_dir / "train_recipe.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        stats = {"examples": len(examples), "first_loss": history[0], "last_loss": history[-1], **quality}
        _append_csv(self.out / "key_frame.csv", stats)
        return stats

    def export(self, folder: Path | None = None) -> Path:
        """The trained model as a model directory (LoRA merged into a copy, or kept as the recipe's task
        adapter; training continues unchanged)."""
        import copy

        folder = Path(folder) if folder is not None else self.out / "model"
        if self.release:
            return self._export_release(folder)
        model = copy.deepcopy(self.accelerator.unwrap_model(self.module).model).cpu().eval()
        spec = self.cfg.adapter
        if spec is not None:
            factors, scale = extract_lora(model.vlm.language_model)
            start = self.start_dense
            dense = {}
            for name, value in model.state_dict().items():
                if name.split(".", 1)[0] in spec.dense:
                    dense[name] = value.clone()
                    value.copy_(start[name])  # the base keeps the start model's head; the adapter carries its own
            model.task_adapters = {**self.start_adapters, spec.task: TaskAdapter(spec.task, factors, scale, dense)}
        else:
            from glus_ros.training.adapter_carry import carry_adapters

            merge_lora(model)  # the start model's adapters go along while the base moved little under them
            model.task_adapters = carry_adapters(self.start_adapters, self.start_weights, model)
        save_model_dir(model, folder)
        (folder / "train_recipe.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        return folder

    def _export_release(self, folder: Path) -> Path:
        """A fine-tuned release, twice: ``folder`` in the release layout (LoRA merged; ``--checkpoint folder``) and
        ``<out>/adapter`` with the LoRA adapter and the trained heads alone (``--checkpoint RELEASE --adapter``)."""
        from glus_ros.model.release_export import save_adapter, save_release

        if self.cfg.checkpoint is None:
            raise ValueError("exporting a fine-tuned release needs the release folder it started from (checkpoint:)")
        model = self.accelerator.unwrap_model(self.module).model
        save_adapter(model, self.out / "adapter", self.cfg.checkpoint, overwrite=True)
        save_release(model, folder, self.cfg.checkpoint, overwrite=True)
        (folder / "train_recipe.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        return folder

    # --- the loop ---------------------------------------------------------------------------
    def _mean_over_processes(self, sums: dict[str, float]) -> dict[str, float]:
        """A step's loss terms as the mean over processes (a term a process lacked counts 0 there, as a
        micro-batch without it counts in one process), so metrics.csv holds the global step's numbers and every
        process sees the same total."""
        values = torch.tensor([[sums.get(k, 0.0), float(k in sums)] for k in LOG_TERMS], dtype=torch.float64,
                              device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="sum")
        n = self.accelerator.num_processes
        return {k: float(values[i, 0]) / n for i, k in enumerate(LOG_TERMS) if values[i, 1] > 0}

    def train(self, resume: bool | Path = False, until_step: int | None = None) -> TrainResult:
        """Run to ``optim.max_steps`` (or stop at ``until_step``, with a checkpoint, as a time-limited job would)."""
        from tqdm import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            folder = self.latest_checkpoint() if resume is True else Path(resume)
            if folder is None:
                raise FileNotFoundError(f"--resume: no checkpoint under {self.out / 'checkpoints'}")
            self.load_checkpoint(folder)
        stop = cfg.optim.max_steps if until_step is None else min(until_step, cfg.optim.max_steps)
        metrics_path, eval_path = self.out / "metrics.csv", self.out / "eval.csv"
        result = TrainResult(self.out, None, self.step)
        batches = self._micro_batches()
        grounded_batches = self._grounded_micro_batches() if self.grounded is not None else None
        bar = tqdm(total=cfg.optim.max_steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and self.accelerator.is_main_process))
        module = self.module
        t_start = time.perf_counter()
        while self.step < stop:
            t0 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            kind = "grounded" if self.is_grounded_step(self.step) else "referring"
            source = grounded_batches if kind == "grounded" and grounded_batches is not None else batches
            for micro in range(cfg.optim.grad_accum):
                batch = next(source)
                last = micro == cfg.optim.grad_accum - 1
                with self.accelerator.no_sync(module) if not last else contextlib.nullcontext():
                    losses = module(batch, self.seg_bank)
                    self.accelerator.backward(losses["total"] / cfg.optim.grad_accum)
                for k in LOG_TERMS:
                    if k in losses:
                        sums[k] = sums.get(k, 0.0) + float(losses[k].detach()) / cfg.optim.grad_accum
            if self.accelerator.num_processes > 1:
                sums = self._mean_over_processes(sums)
            if not math.isfinite(sums["total"]):
                raise FloatingPointError(f"loss became {sums['total']} at step {self.step}; lower optim.lr")
            if cfg.optim.grad_clip:
                self.accelerator.clip_grad_norm_([p for p in module.parameters() if p.requires_grad],
                                                 cfg.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            row = {"step": self.step, "epoch": self.position.epoch, "lr": self.scheduler.get_last_lr()[0],
                   "batch": kind, **sums, "step_s": time.perf_counter() - t0}
            result.history.append(row)
            if self.accelerator.is_main_process and (self.step % cfg.log_every == 0 or self.step == stop):
                _append_csv(metrics_path, row)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['total']:.3f}", lr=f"{row['lr']:.2e}")
            if self.step % cfg.save_every == 0 or self.step == stop:
                self.save_checkpoint()
            due = cfg.eval.every_steps and self.step % cfg.eval.every_steps == 0
            if due or self.step == cfg.optim.max_steps:
                scores = self.evaluate()
                if scores is not None:
                    scores["elapsed_min"] = (time.perf_counter() - t_start) / 60
                    result.evals.append(scores)
                    _append_csv(eval_path, scores)
                    bar.write(f"step {self.step}: J&F {scores['j_and_f']:.3f} (J {scores['j']:.3f}, "
                              f"F {scores['f']:.3f}) on {scores['expressions']} expressions")
        bar.close()
        result.steps = self.step
        if self.step >= cfg.optim.max_steps and self.accelerator.is_main_process:
            result.model_dir = self.export()
            if cfg.key_frame.enabled:
                result.key_frame = self.train_key_frame_selector(result.model_dir)
        return result


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append a row under the file's header (empty where a row lacks a column, e.g. contrastive on a grounded
    step); a row with a column the file lacks rewrites the file once with that column added."""
    header: list[str] = []
    if path.is_file():
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
    new = not header
    if new:
        header = list(row)
    elif not set(row) <= set(header):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        header += [k for k in row if k not in header]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
    with path.open("w" if new else "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _truncate_csv(path: Path, last_step: int) -> None:
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    kept = [r for r in rows if int(float(r["step"])) <= last_step]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
