"""GLUS as a grounding backend: one MLLM pass over (context frames, query window) -> SAM 2 prompts per frame.

A thin wrapper over ``GLUSModel.seg_prompts``: the window is GLUS's query window (at most
``sampling.num_query`` frames; a shorter one is padded by repeating its newest frame, as the live
engine does at the start of a stream), ``context`` its context frames. Each window frame gets the
[SEG] prompt, the grounding-map logits (models with the map) and the point head's points (models
with a head). The offline video loops (``VideoSegmenter``, ``PointPredictor``) stay as they are;
this is the per-window call a streaming engine makes on each re-grounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from glus_ros.backends.base import FrameGrounding, GroundingBackend, TargetGrounding
from glus_ros.core.frames import clip_pixels
from glus_ros.model.point_head import decode_points
from glus_ros.model.prompting import clean_expression

if TYPE_CHECKING:
    from glus_ros.model.glus import GLUSModel


def check_window(window: Sequence[np.ndarray], context: Sequence[np.ndarray]) -> tuple[int, int]:
    """All frames one size; returns (height, width)."""
    if len(window) == 0:
        raise ValueError("the window has no frames")
    height, width = window[0].shape[:2]
    for i, f in enumerate([*window, *context]):
        if f.shape[:2] != (height, width):
            raise ValueError(f"frame {i} of the window and context is {f.shape[1]}x{f.shape[0]}, "
                             f"the first is {width}x{height}")
    return height, width


class GLUSBackend(GroundingBackend):
    name: ClassVar = "glus"
    answers: ClassVar = "prompts"

    def __init__(self, model: GLUSModel, dtype: str = "fp32") -> None:
        self.model = model.eval()
        self.dtype = dtype

    @property
    def tracker(self) -> GLUSModel:
        return self.model

    @torch.inference_mode()
    def ground(self, window: Sequence[np.ndarray], expressions: Sequence[str],
               context: Sequence[np.ndarray] = (), timestamps: Sequence[float] | None = None,
               ) -> list[TargetGrounding]:
        from glus_ros.devices import autocast_context

        check_window(window, context)
        cfg = self.model.cfg
        if len(window) > cfg.sampling.num_query:
            raise ValueError(f"GLUS reads a window of at most {cfg.sampling.num_query} frames, got {len(window)}")
        if cfg.loop.prompt_format == "llava_v1":
            return self._ground_conversation(window, expressions, context)
        texts = [clean_expression(e) for e in expressions]
        if not texts:
            return []
        frames = list(context) + list(window) + [window[-1]] * (cfg.sampling.num_query - len(window))
        pixels = clip_pixels(self.model, frames)  # as vlm.clip_preprocess says
        batch = len(texts)
        with autocast_context(self.model.device, self.dtype):
            embeds = self.model.encode_clip_frames(pixels)
            nc = len(context)
            context_embeds = embeds[None, :nc].expand(batch, -1, -1, -1)
            query_embeds = embeds[None, nc:].expand(batch, -1, -1, -1)
            context_pixels = pixels[None, :nc].expand(batch, -1, -1, -1, -1) if nc else None
            out = self.model.seg_prompts(context_embeds, query_embeds, texts, context_pixels=context_pixels)
            points = None
            if self.model.point_head is not None and cfg.points is not None:
                raw = self.model.points_from_seg(out.seg_hidden, out.query_states).float()
                points = decode_points(raw, cfg.points.threshold)
        results = []
        for b, text in enumerate(texts):
            frames_out = {}
            for t in range(len(window)):
                frames_out[t] = FrameGrounding(
                    points=None if points is None else list(points[b][t]),
                    prompt=out.prompts[b, t].float(),
                    grid=None if out.grounding is None else out.grounding[b, t].float())
            results.append(TargetGrounding(text, frames_out))
        return results

    def _ground_conversation(self, window: Sequence[np.ndarray], expressions: Sequence[str],
                             context: Sequence[np.ndarray]) -> list[TargetGrounding]:
        """The released weights: the official step per expression (the window's frames as consecutive turns); a
        prompt for the newest frame when the answer is [SEG], no frame answered otherwise."""
        from glus_ros.core.grounders import ConversationGrounder
        from glus_ros.devices import autocast_context

        frames = [*context, *window]
        tower = self.model.vlm.vision_tower
        results = []
        with autocast_context(self.model.device, self.dtype):
            tokens = list(self.model.encode_clip_frames(
                clip_pixels(self.model, frames).to(next(tower.parameters()).dtype)))
            for text in expressions:
                answer = ConversationGrounder(self.model, None, text).step(tokens, len(context), len(window))
                prompt = answer.frames[-1].prompt
                frames_out = {} if prompt is None else {len(window) - 1: FrameGrounding(prompt=prompt[0].float())}
                results.append(TargetGrounding(text, frames_out))
        return results
