"""The multimodal LLM: a transformers LLaVA model whose frames we encode, pool and place ourselves.

We call the vision tower, pool its patch tokens (the paper's 4x reduction, 256 -> 64 per frame),
project them and scatter them into the token embeddings, then run the language model and read the
hidden states at the [SEG] positions.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from glus_ros.model.config import VLMConfig, _pool_side
from glus_ros.model.temporal import TemporalModule
from glus_ros.model.visual_position import VisualPositionEmbedding


class VisionLanguageModel(nn.Module):
    def __init__(self, cfg: VLMConfig, vocab_size: int, pad_id: int, image_id: int, empty_llm: bool = False) -> None:
        """``empty_llm``: the language model and LM head are built on the meta device (no memory, no random
        init) for a loader to assign checkpoint tensors to; the vision tower and projector are built normally."""
        super().__init__()
        self.cfg = cfg
        self.image_id = image_id
        text = dict(cfg.text)
        text["vocab_size"] = max(int(text.get("vocab_size", 0)), vocab_size)
        vision = dict(cfg.vision)
        vision["image_size"] = cfg.image_size
        llava_cfg = LlavaConfig(
            text_config=LlamaConfig(**text, pad_token_id=pad_id),
            vision_config=CLIPVisionConfig(**vision),
            image_token_index=image_id,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy="default",
            image_seq_length=cfg.tokens_per_frame,
            projector_hidden_act="gelu",
        )
        with torch.device("meta") if empty_llm else contextlib.nullcontext():
            self.llava = LlavaForConditionalGeneration(llava_cfg)
        if empty_llm:
            self.llava.model.vision_tower = AutoModel.from_config(llava_cfg.vision_config)
            self.llava.model.multi_modal_projector = type(self.llava.model.multi_modal_projector)(llava_cfg)
        if cfg.projector == "linear":  # LLaVA-1 (LISA-7B-v1) uses one Linear
            self.llava.model.multi_modal_projector = nn.Linear(vision["hidden_size"], text["hidden_size"])
        elif cfg.projector != "mlp2x_gelu":
            raise ValueError(f"unknown projector '{cfg.projector}' (linear or mlp2x_gelu)")
        self.hidden_size = int(text["hidden_size"])
        self.region_id: int | None = None  # the <region> token id, set by the owner (GLUSModel)
        self.temporal: TemporalModule | None = None
        if cfg.temporal_module:
            with torch.random.fork_rng(devices=[]):  # the other modules initialise as without it
                self.temporal = TemporalModule(self.hidden_size, int(text.get("num_attention_heads", 1)))
        self.visual_position: VisualPositionEmbedding | None = None
        if cfg.visual_position:
            self.visual_position = VisualPositionEmbedding(cfg.tokens_per_frame, self.hidden_size)

    @property
    def vision_tower(self) -> nn.Module:
        return self.llava.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        return self.llava.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.llava.model.language_model

    def encode_frames(self, pixel_values: torch.Tensor, position: bool = True) -> torch.Tensor:
        """(N, 3, S, S) CLIP-normalised frames -> (N, tokens_per_frame, hidden) LLM inputs.

        ``position=False`` leaves out the cell code (``vlm.visual_position``): what the vision tower and
        projector alone make of the frame (vision pre-training).
        """
        grid = self.patch_features(pixel_values)                  # (N, G, G, D)
        if self.cfg.token_pool_layout == "strip":  # LLaVA/GLUS AvgPool1d over the raster token sequence
            feats = F.avg_pool1d(grid.flatten(1, 2).transpose(1, 2), self.cfg.visual_token_pool).transpose(1, 2)
            tokens = self.projector(feats)
            return tokens if self.visual_position is None or not position else self.visual_position(tokens)
        pool = _pool_side(self.cfg.visual_token_pool)
        if pool > 1:
            feats = F.avg_pool2d(grid.permute(0, 3, 1, 2), pool).flatten(2).transpose(1, 2)
        else:
            feats = grid.flatten(1, 2)
        tokens = self.projector(feats)
        return tokens if self.visual_position is None or not position else self.visual_position(tokens)

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) CLIP-normalised frames -> (N, G, G, vision hidden) un-pooled patch grid (row = y).

        What :meth:`encode_frames` pools and projects, and what region prompts read.
        """
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        feats = out.hidden_states[self.cfg.vision_feature_layer][:, 1:]  # drop CLS ("default" strategy)
        n, p, d = feats.shape
        side = round(p**0.5)
        return feats.reshape(n, side, side, d)

    def input_embeddings(self, input_ids: torch.Tensor, frame_embeds: torch.Tensor,
                         region_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the frames at the image tokens and, if given, regions at the ``<region>`` tokens.

        frame_embeds: (B, F, T, hidden); region_embeds: (R, hidden), the batch's region tokens in reading order.
        """
        embeds = self.language_model.embed_tokens(input_ids)
        slots = input_ids == self.image_id
        flat = frame_embeds.reshape(-1, frame_embeds.shape[-1]).to(embeds.dtype)
        if int(slots.sum()) != flat.shape[0]:
            raise ValueError(f"prompt has {int(slots.sum())} image tokens but {flat.shape[0]} frame tokens were given")
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), flat)
        if region_embeds is not None:
            if self.region_id is None:
                raise ValueError("region embeddings given but the model has no <region> token id")
            where = input_ids == self.region_id
            if int(where.sum()) != region_embeds.shape[0]:
                raise ValueError(f"prompt has {int(where.sum())} <region> tokens but {region_embeds.shape[0]} "
                                 "regions were given")
            embeds = embeds.masked_scatter(where.unsqueeze(-1), region_embeds.to(embeds.dtype))
        return embeds

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                frame_embeds: torch.Tensor,
                region_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Run the LLM with frames placed at the image tokens, in order (regions at ``<region>`` tokens).

        frame_embeds: (B, F, T, hidden) — F frame placeholders per sample, T tokens each.
        Returns (logits, hidden_states).
        """
        embeds = self.input_embeddings(input_ids, frame_embeds, region_embeds)
        out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, output_hidden_states=True)
        logits = self.llava.lm_head(out.hidden_states[-1])
        return logits, out.hidden_states
