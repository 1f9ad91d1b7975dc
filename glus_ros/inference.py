"""Offline GLUS inference on a whole video (ROS-free): load a model, segment a video or a dataset split.

The window loop itself (context frames + query windows, the SAM 2 memory, forward then backward from a key
frame) is :class:`glus_ros.core.loop.WindowLoop`, the same for the project's own family and the released
weights; this module adds the key-frame selector and the dataset and loading entry points.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from glus_ros.backends.kinds import backend_of
from glus_ros.core.frames import clip_pixels
from glus_ros.core.loop import VideoSegmentation, WindowLoop
from glus_ros.devices import autocast_context, resolve_device
from glus_ros.model.glus import GLUSModel
from glus_ros.model.prompting import clean_expression

log = logging.getLogger(__name__)

__all__ = ["VideoSegmentation", "VideoSegmenter", "load_model", "predict_dataset"]


class VideoSegmenter:
    """Segments the object an expression refers to in every frame of a video."""

    def __init__(self, model: GLUSModel, dtype: str = "fp32") -> None:
        self.model = model.eval()
        self.dtype = dtype

    @torch.inference_mode()
    def key_frame_scores(self, frames: Sequence[np.ndarray], expression: str, chunk: int = 32) -> np.ndarray:
        """Predicted IoU of every frame (the key-frame selector); the best one starts the segmentation."""
        expression = clean_expression(expression)
        embeds = []
        with autocast_context(self.model.device, self.dtype):
            for i in range(0, len(frames), chunk):
                embeds.append(self.model.encode_clip_frames(clip_pixels(self.model, frames[i:i + chunk])))
            logits = self.model.key_frame_logits(torch.cat(embeds), expression)
        return torch.sigmoid(logits.float()).cpu().numpy()

    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray], expression: str, start_frame: int = 0,
                progress: Callable[[int], None] | None = None, key_frame: bool = False) -> VideoSegmentation:
        """Masks for every frame; ``key_frame`` lets the selector choose ``start_frame``."""
        if len(frames) == 0:
            raise ValueError("the video has no frames")
        key_scores = None
        if self.model.cfg.loop.prompt_format == "llava_v1":
            if key_frame:
                raise ValueError("the released GLUS weights carry no key-frame selector (GLUS's key-frame "
                                 "selection is a separate model): give the key frame as start_frame")
            # the expression as given: the conversation normalises it the official way (official_expression)
        else:
            expression = clean_expression(expression)
            if key_frame:
                key_scores = self.key_frame_scores(frames, expression)
                start_frame = int(np.argmax(key_scores))
        result = WindowLoop(self.model, self.dtype).segment(frames, expression, start_frame, progress)
        result.key_frame_scores = key_scores
        return result


def load_model(spec: str | Path, checkpoint: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
               device: str = "cpu", overrides: dict | None = None, vision_tower: str | Path | None = None,
               dtype: str | None = None, adapter: str | Path | None = None) -> GLUSModel:
    """A model from a config name / YAML / trained directory, with optional official checkpoints.

    ``overrides`` change config values that do not change the weights' shapes (e.g. ablations:
    ``{"sampling": {"num_context": 0}}`` or ``{"memory": {"enabled": False}}``), add heads to a trained
    folder (``ADDABLE_HEADS``), give its vision tower a finer input with the same token grid
    (``{"vlm": {"image_size": 128, "vision": {"patch_size": 16}}}``: the patch kernels are resized), or
    deepen its LLM (``{"vlm": {"text": {"num_hidden_layers": 8}}}``: new layers start as the identity).

    A config with an ``official`` section (glus-s, glus-a) loads a released GLUS folder as it is published
    (``glus_ros.official_glus.load_official_model``): ``vision_tower`` is the local CLIP folder, ``dtype``
    the weights' precision ("bf16" by default on CUDA, else "fp32") and ``adapter`` a fine-tuning export applied
    to the release (``glus_ros.model.release_export.save_adapter``).
    """
    if (backend := backend_of(spec)) != "glus":
        raise ValueError(f"model {spec} is a {backend} model (glus_ros.backends): this runs GLUS models only; "
                         "`glus-ros segment --points` runs it")
    if _is_official(spec, overrides):
        from glus_ros.official_glus import load_official_model

        return load_official_model(spec, checkpoint, sam2_checkpoint, device, overrides, vision_tower, dtype,
                                   adapter=adapter)
    if adapter is not None:
        raise ValueError(f"--adapter applies a fine-tuning export to the released GLUS weights (glus-s, glus-a); "
                         f"model {spec} is not a release")
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
