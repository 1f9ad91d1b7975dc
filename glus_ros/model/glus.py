"""GLUS: one MLLM for global (context frames) + local (query frames) reasoning, SAM 2 memory tracker.

``GLUSModel`` owns the modules and the per-window computation:
frames -> vision tower -> [SEG] hidden states -> projection -> SAM 2 sparse prompts -> masks, with the
memory bank carrying the object from frame to frame. Offline video loops live in
``glus_ros.inference``; the losses and the training loop in ``glus_ros.training``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from glus_ros.model.config import GLUSConfig, KeyFrameConfig, PointsConfig, load_config
from glus_ros.model.key_frame import KeyFrameSelector
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.point_head import PointHead
from glus_ros.model.prompting import PromptBuilder
from glus_ros.model.sam2_head import FrameFeatures, MaskPrediction, SAM2Head
from glus_ros.model.tokenizer import load_tokenizer
from glus_ros.model.vlm import VisionLanguageModel

log = logging.getLogger(__name__)


@dataclass
class SegOutput:
    prompts: torch.Tensor          # (B, num_query, prompt_dim) SAM 2 sparse prompts
    seg_hidden: torch.Tensor       # (B, num_query, hidden) [SEG] hidden states (contrastive loss)
    logits: torch.Tensor           # (B, L, vocab) LLM logits (text cross entropy)


class SegProjection(nn.Sequential):
    """hidden -> hidden -> prompt dim; the layout of GLUS/LISA ``text_hidden_fcs[0]``."""

    def __init__(self, hidden: int, out_dim: int) -> None:
        super().__init__(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim), nn.Dropout(0.0))


class GLUSModel(nn.Module):
    def __init__(self, cfg: GLUSConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(tokenizer, cfg.vlm)
        self.vlm = VisionLanguageModel(cfg.vlm, len(tokenizer), tokenizer.pad_token_id, self.prompts.image_id)
        self.sam = SAM2Head(cfg.sam2)
        self.seg_projection = SegProjection(self.vlm.hidden_size, self.sam.prompt_dim)
        self.key_frame: KeyFrameSelector | None = None
        if cfg.key_frame is not None:
            self.key_frame = KeyFrameSelector(self.vlm.hidden_size, cfg.key_frame)
        self.point_head: PointHead | None = None
        if cfg.points is not None:
            self.point_head = PointHead(self.vlm.hidden_size, cfg.points.max_points)

    def add_key_frame_selector(self, cfg: KeyFrameConfig | None = None) -> KeyFrameSelector:
        """Attach a new (untrained) selector; the config then saves it with the model."""
        self.cfg.key_frame = cfg or KeyFrameConfig()
        self.key_frame = KeyFrameSelector(self.vlm.hidden_size, self.cfg.key_frame).to(self.device)
        return self.key_frame

    def add_point_head(self, cfg: PointsConfig | None = None) -> PointHead:
        """Attach a new (untrained) point head; the config then saves it with the model."""
        self.cfg.points = cfg or PointsConfig()
        self.point_head = PointHead(self.vlm.hidden_size, self.cfg.points.max_points).to(self.device)
        return self.point_head

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, spec: str | Path | GLUSConfig, checkpoint_dir: Path | None = None,
                    overrides: dict[str, Any] | None = None) -> GLUSModel:
        cfg = spec if isinstance(spec, GLUSConfig) else load_config(spec, overrides)
        tokenizer_dir = checkpoint_dir
        if isinstance(spec, (str, Path)) and Path(spec).is_dir():
            tokenizer_dir = Path(spec)
        tokenizer = load_tokenizer(cfg.vlm.tokenizer, tokenizer_dir)
        return cls(cfg, tokenizer)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by the group names used in ``trainable`` (config) and by the optimiser."""
        sam = self.sam.sam
        memory = [sam.memory_attention, sam.memory_encoder]
        memory_params = [p for m in memory for p in m.parameters()]
        memory_params += [sam.maskmem_tpos_enc, sam.no_mem_embed, sam.no_mem_pos_enc]
        if sam.no_obj_embed_spatial is not None:
            memory_params.append(sam.no_obj_embed_spatial)
        llm = [*self.vlm.language_model.parameters(), *self.vlm.llava.lm_head.parameters()]
        return {
            "vision_tower": list(self.vlm.vision_tower.parameters()),
            "llm": llm,
            "llm_lora": [],  # LoRA adapters are added by the trainer (peft); the base LLM stays frozen
            "projections": [*self.vlm.projector.parameters(), *self.seg_projection.parameters()],
            "image_encoder": list(sam.image_encoder.parameters()),
            "prompt_encoder": list(sam.sam_prompt_encoder.parameters()),
            "mask_decoder": list(sam.sam_mask_decoder.parameters()),
            "memory": memory_params,
            "key_frame": list(self.key_frame.parameters()) if self.key_frame is not None else [],
            "points": list(self.point_head.parameters()) if self.point_head is not None else [],
            "temporal": list(self.vlm.temporal.parameters()) if self.vlm.temporal is not None else [],
        }

    def apply_trainable(self, groups: list[str] | None = None) -> int:
        """Freeze everything, then unfreeze ``groups`` (default: the config's split). Returns #trainable."""
        groups = self.cfg.trainable if groups is None else groups
        table = self.parameter_groups()
        unknown = sorted(set(groups) - set(table))
        if unknown:
            raise ValueError(f"unknown trainable groups {unknown}; known: {sorted(table)}")
        for p in self.parameters():
            p.requires_grad_(False)
        for name in groups:
            for p in table[name]:
                p.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def new_memory_bank(self) -> MemoryBank | None:
        if not self.cfg.memory.enabled:
            return None
        stride = self.cfg.memory.train_stride if self.training else self.cfg.memory.stride
        return MemoryBank(self.cfg.memory.slots, stride)

    # --- encoders ---------------------------------------------------------------------------
    def encode_clip_frames(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, s, s) -> (N, tokens_per_frame, hidden)."""
        return self.vlm.encode_frames(clip_pixels)

    def encode_sam_frames(self, sam_pixels: torch.Tensor) -> FrameFeatures:
        return self.sam.encode_images(sam_pixels)

    # --- the MLLM step ----------------------------------------------------------------------
    def seg_prompts(self, context_embeds: torch.Tensor, query_embeds: torch.Tensor, expressions: list[str],
                    answers: list[str] | None = None) -> SegOutput:
        """One MLLM pass per sample over [context frames, query frames, expression, answer].

        context_embeds (B, Nc, T, D), query_embeds (B, Nq, T, D). Returns one prompt per query frame.
        """
        batch, num_query = query_embeds.shape[0], query_embeds.shape[1]
        num_context = context_embeds.shape[1]
        shown = num_query if self.cfg.sampling.query_in_prompt else 0
        encoded = [self.prompts.encode(e, num_context, num_query, None if answers is None else answers[i], shown)
                   for i, e in enumerate(expressions)]
        ids, mask, _labels = self.prompts.batch(encoded)
        ids, mask = ids.to(query_embeds.device), mask.to(query_embeds.device)
        frames = torch.cat([context_embeds, query_embeds], dim=1) if shown else context_embeds
        if self.vlm.temporal is not None:  # VideoMolmo temporal module, frames in the order given
            frames = self.vlm.temporal(frames)
        logits, hidden_states = self.vlm(ids, mask, frames)
        hidden = hidden_states[self.cfg.vlm.seg_hidden_layer]
        seg_positions = ids == self.prompts.seg_id
        counts = seg_positions.sum(dim=1)
        if not bool((counts == num_query).all()):
            raise ValueError(f"expected one [SEG] per query frame ({num_query}), answers hold {counts.tolist()}")
        seg_hidden = hidden[seg_positions].reshape(batch, num_query, -1)
        prompts = self.seg_projection(seg_hidden.float())
        return SegOutput(prompts=prompts, seg_hidden=seg_hidden, logits=logits)

    def labels_for(self, expressions: list[str], num_context: int, num_query: int) -> torch.Tensor:
        shown = num_query if self.cfg.sampling.query_in_prompt else 0
        encoded = [self.prompts.encode(e, num_context, num_query, query_frames_shown=shown) for e in expressions]
        return self.prompts.batch(encoded)[2]

    def key_frame_logits(self, frame_embeds: torch.Tensor, expression: str) -> torch.Tensor:
        """(T, tokens, hidden) visual tokens of every frame -> (T,) selector logits (predicted IoU)."""
        if self.key_frame is None:
            raise ValueError("this model has no trained key-frame selector (train one: glus-ros train "
                             "--config <recipe> --key-frame-only)")
        ids = self.tokenizer(expression, add_special_tokens=False, return_tensors="pt").input_ids[0]
        text = self.vlm.language_model.embed_tokens(ids.to(frame_embeds.device))
        return self.key_frame(frame_embeds, text)

    def points_from_seg(self, seg_hidden: torch.Tensor) -> torch.Tensor:
        """[SEG] states (B, Nq, hidden) -> raw point slots (B, Nq, K, 3); decode with ``point_head.decode_points``."""
        if self.point_head is None:
            raise ValueError("this model has no point head (add 'points: {}' to its config and train it)")
        return self.point_head(seg_hidden.float())

    # --- the SAM 2 step ---------------------------------------------------------------------
    def track_step(self, frame: FrameFeatures, prompt: torch.Tensor, bank: MemoryBank | None) -> MaskPrediction:
        """Decode one query frame from its [SEG] prompt (B, prompt_dim) and the memory bank."""
        return self.sam.step(frame, bank, prompt.unsqueeze(1))
