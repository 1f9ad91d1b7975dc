"""Offline GLUS inference on a whole video (ROS-free): context frames + sliding query windows.

Context frames are fixed for the video (the middle frame of each of N segments); query windows of
``num_query`` consecutive frames slide with stride 1, each decoding its newest frame, and every mask
goes into the bounded memory bank. With a start (key) frame the model propagates forward from it and
then backward from it (GLUS Sec. 4.4).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.prompting import clean_expression
from glus_ros.model.sam2_head import FrameFeatures
from glus_ros.model.transforms import clip_input, logits_to_frame, sam_input, to_tensor
from glus_ros.sampling import context_frame_indices, propagation_orders, query_windows

log = logging.getLogger(__name__)


@dataclass
class VideoSegmentation:
    masks: np.ndarray                 # (T, H, W) bool at the input size
    scores: np.ndarray                # (T,) probability that the object is visible
    start_frame: int
    timings: dict[str, float] = field(default_factory=dict)
    key_frame_scores: np.ndarray | None = None  # (T,) selector's predicted IoU, when it chose start_frame


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA when asked; fp32 otherwise."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype != "bf16":
        raise ValueError(f"unknown dtype '{dtype}' (fp32 or bf16)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available on this machine")
    return device


class FrameCache:
    """Per-frame encoder outputs, computed once and dropped when no window needs them any more."""

    def __init__(self, model: GLUSModel, frames: Sequence[np.ndarray]) -> None:
        self.model = model
        self.frames = frames
        self.clip: dict[int, torch.Tensor] = {}
        self.sam: dict[int, FrameFeatures] = {}

    def _pixels(self, idx: int) -> torch.Tensor:
        return to_tensor([self.frames[idx]]).to(self.model.device)

    def clip_embeds(self, indices: Sequence[int]) -> torch.Tensor:
        missing = [i for i in dict.fromkeys(indices) if i not in self.clip]
        if missing:
            pixels = torch.cat([self._pixels(i) for i in missing])
            embeds = self.model.encode_clip_frames(clip_input(pixels, self.model.cfg.vlm.image_size))
            for i, e in zip(missing, embeds, strict=True):
                self.clip[i] = e
        return torch.stack([self.clip[i] for i in indices])

    def clip_pixels(self, indices: Sequence[int]) -> torch.Tensor:
        """(1, N, 3, S, S) the frames as the vision tower's input (what a motion field reads)."""
        pixels = torch.cat([self._pixels(i) for i in indices])
        return clip_input(pixels, self.model.cfg.vlm.image_size)[None]

    def sam_features(self, idx: int) -> FrameFeatures:
        if idx not in self.sam:
            self.sam[idx] = self.model.encode_sam_frames(sam_input(self._pixels(idx), self.model.sam.image_size))
        return self.sam[idx]

    def keep_only(self, keep: set[int]) -> None:
        for store in (self.clip, self.sam):
            for i in [i for i in store if i not in keep]:
                del store[i]


class VideoSegmenter:
    """Segments the object an expression refers to in every frame of a video."""

    def __init__(self, model: GLUSModel, dtype: str = "fp32") -> None:
        self.model = model.eval()
        self.dtype = dtype

    @torch.inference_mode()
    def key_frame_scores(self, frames: Sequence[np.ndarray], expression: str, chunk: int = 32) -> np.ndarray:
        """Predicted IoU of every frame (the key-frame selector); the best one starts the segmentation."""
        expression = clean_expression(expression)
        size = self.model.cfg.vlm.image_size
        embeds = []
        with autocast_context(self.model.device, self.dtype):
            for i in range(0, len(frames), chunk):
                pixels = to_tensor(list(frames[i:i + chunk])).to(self.model.device)
                embeds.append(self.model.encode_clip_frames(clip_input(pixels, size)))
            logits = self.model.key_frame_logits(torch.cat(embeds), expression)
        return torch.sigmoid(logits.float()).cpu().numpy()

    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray], expression: str, start_frame: int = 0,
                progress: Callable[[int], None] | None = None, key_frame: bool = False) -> VideoSegmentation:
        """Masks for every frame; ``key_frame`` lets the selector choose ``start_frame``."""
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        if self.model.cfg.official is not None:  # the released weights: the official inference, step for step
            from glus_ros.official_glus import OfficialVideoSegmenter

            if key_frame:
                raise ValueError("the released GLUS weights carry no key-frame selector (GLUS's key-frame "
                                 "selection is a separate model): give the key frame as start_frame")
            # the expression as given: the official prompt keeps its spacing (official_prompt.official_expression)
            return OfficialVideoSegmenter(self.model).segment(frames, expression, start_frame, progress)
        expression = clean_expression(expression)
        key_scores = None
        if key_frame:
            key_scores = self.key_frame_scores(frames, expression)
            start_frame = int(np.argmax(key_scores))
        height, width = frames[0].shape[:2]
        for i, f in enumerate(frames):
            if f.shape[:2] != (height, width):
                raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {width}x{height}")
        cfg = self.model.cfg
        num_frames = len(frames)
        context = context_frame_indices(num_frames, cfg.sampling.num_context)
        cache = FrameCache(self.model, frames)
        context_pixels = cache.clip_pixels(context) if context else None
        masks = np.zeros((num_frames, height, width), dtype=bool)
        scores = np.zeros(num_frames, dtype=np.float32)
        done: set[int] = set()
        t0 = time.perf_counter()
        with autocast_context(self.model.device, self.dtype):
            key_bank: MemoryBank | None = None
            for direction, order in enumerate(propagation_orders(num_frames, start_frame)):
                if direction == 0:
                    bank = self.model.new_memory_bank()
                else:  # backward: start again from the key frame's memory only
                    bank = key_bank
                for window in query_windows(order, cfg.sampling.num_query, 1):
                    todo = [f for f in window.decode if f not in done]
                    if not todo:
                        continue
                    query = list(window.frames)
                    while len(query) < cfg.sampling.num_query:  # videos shorter than the window
                        query.append(query[-1])
                    embeds = cache.clip_embeds(context + query)
                    out = self.model.seg_prompts(embeds[None, : len(context)], embeds[None, len(context):],
                                                 [expression], context_pixels=context_pixels)
                    for frame_idx in todo:
                        slot = query.index(frame_idx)
                        grid = out.grounding[:, slot] if out.grounding is not None else None
                        pred = self.model.track_step(cache.sam_features(frame_idx), out.prompts[:, slot], bank, grid)
                        logits = logits_to_frame(pred.logits, height, width)[0]
                        visible = float(torch.sigmoid(pred.object_score)[0, 0])
                        masks[frame_idx] = (logits > 0).cpu().numpy() if visible > 0.5 else False
                        scores[frame_idx] = visible
                        done.add(frame_idx)
                        if frame_idx == start_frame and bank is not None:
                            key_bank = bank.seed_from(bank.next_step - 1)  # seeds the backward pass
                        if progress is not None:
                            progress(1)
                    cache.keep_only(set(context) | set(window.frames))
        elapsed = time.perf_counter() - t0
        return VideoSegmentation(masks, scores, start_frame,
                                 {"total_s": elapsed, "per_frame_s": elapsed / num_frames}, key_scores)


def load_model(spec: str | Path, checkpoint: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
               device: str = "cpu", overrides: dict | None = None, vision_tower: str | Path | None = None,
               dtype: str | None = None) -> GLUSModel:
    """A model from a config name / YAML / trained directory, with optional official checkpoints.

    ``overrides`` change config values that do not change the weights' shapes (e.g. ablations:
    ``{"sampling": {"num_context": 0}}`` or ``{"memory": {"enabled": False}}``), add heads to a trained
    folder (``ADDABLE_HEADS``), give its vision tower a finer input with the same token grid
    (``{"vlm": {"image_size": 128, "vision": {"patch_size": 16}}}``: the patch kernels are resized), or
    deepen its LLM (``{"vlm": {"text": {"num_hidden_layers": 8}}}``: new layers start as the identity).

    A config with an ``official`` section (glus-s, glus-a) loads a released GLUS folder as it is published
    (``glus_ros.official_glus.load_official_model``): ``vision_tower`` is the local CLIP folder and ``dtype``
    the weights' precision ("bf16" by default on CUDA, else "fp32").
    """
    from glus_ros.backends.loading import backend_of

    if (backend := backend_of(spec)) != "glus":
        raise ValueError(f"model {spec} is a {backend} model (glus_ros.backends): this runs GLUS models only; "
                         "`glus-ros segment --points` runs it")
    if _is_official(spec, overrides):
        from glus_ros.official_glus import load_official_model

        return load_official_model(spec, checkpoint, sam2_checkpoint, device, overrides, vision_tower, dtype)
    if vision_tower is not None:
        raise ValueError(f"--vision-tower is for the released GLUS weights (glus-s, glus-a); model {spec} "
                         "carries its own vision tower")
    from glus_ros.model.checkpoints import (
        ADDABLE_HEADS,
        load_glus_checkpoint,
        load_model_dir_weights,
        load_sam2_checkpoint,
    )
    from glus_ros.model.config import model_dir_of

    ckpt_dir = Path(checkpoint) if checkpoint is not None else None
    if ckpt_dir is not None and not ckpt_dir.exists():
        raise FileNotFoundError(f"checkpoint {ckpt_dir} does not exist")
    with torch.random.fork_rng():  # weights not loaded below are initialised the same way on every run
        torch.manual_seed(0)
        model = GLUSModel.from_config(spec, ckpt_dir if ckpt_dir is not None and ckpt_dir.is_dir() else None,
                                      overrides)
    folder = model_dir_of(spec)  # a trained model folder, given by path or by name (models/<name>/)
    if folder is not None:  # heads added by overrides (e.g. a point head for a pointing stage) start fresh
        load_model_dir_weights(model, folder, ADDABLE_HEADS if overrides else (), resize_patches=bool(overrides),
                               grow_layers=bool(overrides))
    if sam2_checkpoint is not None:
        load_sam2_checkpoint(model.sam.sam, Path(sam2_checkpoint))
    if ckpt_dir is not None:
        load_glus_checkpoint(model, ckpt_dir)
    return model.to(resolve_device(device))


def _is_official(spec: str | Path, overrides: dict | None) -> bool:
    from glus_ros.model.config import load_config

    return load_config(spec, overrides).official is not None


def predict_dataset(model: str | Path | GLUSModel, dataset, out_dir: Path, device: str = "cpu",
                    key_frame: bool = False, dtype: str = "fp32", progress: bool = True) -> Path:
    """Masks for every expression of a MeViS-layout dataset: ``<out>/<video>/<exp_id>/<frame>.png``."""
    from tqdm import tqdm

    from glus_ros.video_io import write_mask_png

    net = model if isinstance(model, GLUSModel) else load_model(model, device=device)
    if key_frame and net.key_frame is None:
        raise ValueError("--key-frame needs a trained key-frame selector, which this model does not have")
    segmenter = VideoSegmenter(net, dtype=dtype)
    out_dir = Path(out_dir)
    expressions = dataset.expressions()
    frames_cache: dict[str, list[np.ndarray]] = {}
    for expr in tqdm(expressions, desc="predict", unit="expr", disable=not progress):
        if expr.video not in frames_cache:
            frames_cache.clear()
            frames_cache[expr.video] = [dataset.load_frame(expr.video, f) for f in dataset.frames(expr.video)]
        frames = frames_cache[expr.video]
        result = segmenter.segment(frames, expr.text, key_frame=key_frame)
        for name, mask in zip(dataset.frames(expr.video), result.masks, strict=True):
            write_mask_png(out_dir / expr.video / str(expr.exp_id) / f"{name}.png", mask)
    return out_dir
