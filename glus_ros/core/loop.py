"""The one GLUS window loop over a whole video: context frames + query windows, a SAM 2 step per decoded frame.

Every GLUS model runs here, the project's own family and the released GLUS-S / GLUS-A alike; what differs is read
from the config's ``loop`` section (:class:`~glus_ros.model.config.LoopConfig`): the prompt format (the grounder,
``grounders.py``), how windows grow, which frames are context frames, how the backward pass from a key frame
starts, and how a mask is read from the decoder. With a start (key) frame the model propagates forward from it
and then backward from it (GLUS Sec. 4.4).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from glus_ros.core.frames import FrameEncoder
from glus_ros.core.grounders import make_grounder
from glus_ros.core.tracking import frame_mask, track_frame
from glus_ros.devices import autocast_context
from glus_ros.model.config import LoopConfig
from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.transforms import check_video_size
from glus_ros.sampling import (
    QueryWindow,
    context_frame_indices,
    official_context_frames,
    propagation_orders,
    query_windows,
)


@dataclass
class VideoSegmentation:
    masks: np.ndarray                 # (T, H, W) bool at the input size
    scores: np.ndarray                # (T,) probability that the object is visible
    start_frame: int
    timings: dict[str, float] = field(default_factory=dict)
    key_frame_scores: np.ndarray | None = None  # (T,) selector's predicted IoU, when it chose start_frame


@dataclass
class LoopStep:
    """One decoded frame of a pass (what the parity tests compare with the official code's steps)."""

    direction: int                 # 0 forward, 1 backward
    frame: int                     # the frame decoded
    window: list[int]              # query frames shown, oldest first
    input_ids: list[int] | None = None        # conversation: with IMAGE_PLACEHOLDER per frame
    token: int | None = None                  # conversation: the generated token
    hidden: torch.Tensor | None = None        # conversation: (hidden,) final-norm state at the last prompt position
    prompt: torch.Tensor | None = None        # (prompt_dim,) the SAM 2 prompt (None: no [SEG])
    sparse: torch.Tensor | None = None        # (1, prompt_dim) the prompt as the decoder got it
    pix_mem: torch.Tensor | None = None       # (C, h, w) memory-attention output (None: nothing was read)
    low_res: torch.Tensor | None = None       # (4h, 4w) mask logits of the decoder
    mem_feat: torch.Tensor | None = None      # (mem_dim, h, w) what the memory encoder wrote
    mask: np.ndarray | None = None            # (H, W) bool


@dataclass
class LoopTrace:
    steps: list[LoopStep] = field(default_factory=list)
    context_frames: list[int] = field(default_factory=list)
    encoded_frames: list[int] = field(default_factory=list)   # frames in the order their visual tokens were made


def context_frames_for(loop: LoopConfig, num_frames: int, num_context: int) -> list[int]:
    """The context frames of a video of ``num_frames`` frames under the loop's rule."""
    if loop.context_frames == "official":
        return official_context_frames(num_frames, num_context) if num_context else []
    return context_frame_indices(num_frames, num_context)


def windows_for(loop: LoopConfig, order: list[int], size: int) -> list[QueryWindow]:
    """The query windows over one pass: ``padded`` (the first decodes all its frames, then stride 1) or
    ``growing`` (1, 2, ... ``size`` frames, then sliding; each decodes its newest)."""
    if loop.windows == "growing":
        return [QueryWindow(tuple(order[max(0, i - size):i]), (order[i - 1],)) for i in range(1, len(order) + 1)]
    return query_windows(order, size, 1)


class WindowLoop:
    """Segments the object an expression refers to in every frame of a video, with any GLUS model."""

    def __init__(self, model: GLUSModel, dtype: str = "fp32") -> None:
        self.model = model.eval()
        self.loop = model.cfg.loop
        self.dtype = dtype

    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray], expression: str, start_frame: int = 0,
                progress: Callable[[int], None] | None = None, trace: LoopTrace | None = None) -> VideoSegmentation:
        """Masks for every frame, forward from ``start_frame`` then backward from it. ``expression`` as the caller
        cleaned it (the conversation format normalises it the official way itself)."""
        height, width = check_video_size(frames)
        num_frames = len(frames)
        if not 0 <= start_frame < num_frames:
            raise ValueError(f"start frame {start_frame} outside the video of {num_frames} frames")
        cfg = self.model.cfg
        loop = self.loop
        encoder = FrameEncoder(self.model, frames, one_by_one=loop.prompt_format == "llava_v1")
        grounder = make_grounder(self.model, encoder, expression)
        context = context_frames_for(loop, num_frames, cfg.sampling.num_context)
        if trace is not None:
            trace.context_frames = list(context)
        masks = np.zeros((num_frames, height, width), dtype=bool)
        scores = np.zeros(num_frames, dtype=np.float32)
        done: set[int] = set()
        cleared = loop.backward == "cleared"
        t0 = time.perf_counter()
        with autocast_context(self.model.device, self.dtype):
            key_bank: MemoryBank | None = None
            for direction, order in enumerate(propagation_orders(num_frames, start_frame)):
                bank = self.model.new_memory_bank() if direction == 0 or cleared else key_bank
                for window in windows_for(loop, order, cfg.sampling.num_query):
                    todo = [f for f in window.decode if cleared or f not in done]
                    if not todo:
                        continue
                    answer = grounder.ground(context, window.frames, todo, expression)
                    for frame in todo:
                        step = None
                        if trace is not None:
                            step = LoopStep(direction, frame, list(window.frames), answer.input_ids, answer.token,
                                            None if answer.hidden is None else answer.hidden.float().cpu())
                            trace.steps.append(step)
                        prompt = answer.frames[frame]
                        if prompt.prompt is None:  # no [SEG]: an empty mask, and no memory for this frame
                            masks[frame], scores[frame] = False, 0.0
                            if bank is not None:
                                bank.skip()
                        else:
                            pred = track_frame(self.model, encoder.sam_features(frame), prompt.prompt, bank,
                                               prompt.grid)
                            masks[frame], scores[frame] = frame_mask(pred, height, width, loop)
                            if step is not None:
                                _record(step, prompt.prompt, pred)
                        if step is not None:
                            step.mask = masks[frame].copy()
                        done.add(frame)
                        if frame == start_frame and bank is not None and not cleared:
                            key_bank = bank.seed_from(bank.next_step - 1)  # seeds the backward pass
                        if progress is not None and not (direction == 1 and frame == start_frame):
                            progress(1)  # once per frame (a cleared backward pass decodes the key frame again)
                    encoder.keep_only(set(context) | set(window.frames))
        if trace is not None:
            trace.encoded_frames = list(encoder.encoded)
        elapsed = time.perf_counter() - t0
        return VideoSegmentation(masks, scores, start_frame,
                                 {"total_s": elapsed, "per_frame_s": elapsed / num_frames})


def _record(step: LoopStep, prompt: torch.Tensor, pred) -> None:
    step.prompt = prompt[0].float().cpu()
    step.sparse = prompt.float().cpu()
    step.pix_mem = pred.conditioned[0].float().cpu() if pred.conditioned is not None else None
    step.low_res = pred.low_res_logits[0, 0].float().cpu()
    step.mem_feat = pred.memory[0].float().cpu() if pred.memory is not None else None


__all__ = ["LoopStep", "LoopTrace", "VideoSegmentation", "WindowLoop",
           "context_frames_for", "windows_for"]
