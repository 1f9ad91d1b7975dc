"""GLUS: one MLLM for global (context frames) + local (query frames) reasoning, SAM 2 memory tracker.

``GLUSModel`` owns the modules and the per-window computation:
frames -> vision tower -> [SEG] hidden states -> projection -> SAM 2 sparse prompts -> masks, with the
memory bank carrying the object from frame to frame. Offline video loops live in
``glus_ros.inference``; the losses and the training loop in ``glus_ros.training``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from glus_ros.model.config import GLUSConfig, KeyFrameConfig, PointsConfig, load_config, model_dir_of
from glus_ros.model.grounding_map import GroundingMap, grid_side, mask_prompt
from glus_ros.model.key_frame import KeyFrameSelector
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.point_head import PointHead
from glus_ros.model.prefix_cache import ContextPrefixCache
from glus_ros.model.prompting import (
    IGNORE_INDEX,
    PHRASE_END,
    PHRASE_START,
    REGION_TOKEN,
    ParsedAnswer,
    PromptBuilder,
    parse_answer,
)
from glus_ros.model.region import Region, region_input, roi_average
from glus_ros.model.sam2_head import FrameFeatures, MaskPrediction, SAM2Head
from glus_ros.model.task_adapter import TaskAdapter, routes
from glus_ros.model.tokenizer import EXTRA_SPECIAL_TOKENS, IMAGE_TOKEN, SEG_TOKEN, load_tokenizer
from glus_ros.model.vlm import VisionLanguageModel

log = logging.getLogger(__name__)


@dataclass
class SegOutput:
    prompts: torch.Tensor          # (B, num_query, prompt_dim) SAM 2 sparse prompts
    seg_hidden: torch.Tensor       # (B, num_query, hidden) [SEG] hidden states (contrastive loss)
    logits: torch.Tensor           # (B, L, vocab) LLM logits (text cross entropy)
    grounding: torch.Tensor | None = None  # (B, num_query, G, G) grounding-map logits (vlm.grounding_map)
    query_states: torch.Tensor | None = None  # (B, num_query, T, hidden) LLM states at the query frames' tokens
    anchors: torch.Tensor | None = None    # (B, num_query, 2, G, G) near / far anchor logits (vlm.grounding_spatial)
    motion: torch.Tensor | None = None     # (B, G*G, motion_dim) the context frames' motion (vlm.grounding_motion)


def _merge_rows(parts: list[tuple[list[int], SegOutput]]) -> SegOutput:
    """Sub-batch outputs (their rows of the batch) back into one output in the batch's order."""
    order = torch.tensor([i for rows, _ in parts for i in rows]).argsort()
    merged = {}
    for f in dataclasses.fields(SegOutput):
        values = [getattr(out, f.name) for _, out in parts]
        merged[f.name] = None if values[0] is None else torch.cat(values)[order.to(values[0].device)]
    return SegOutput(**merged)


@dataclass
class GroundedOutput:
    """Teacher-forced grounded answers: one prompt per [SEG] of each answer (a phrase's [SEG] stands for it
    in every query frame of the window)."""

    prompts: list[torch.Tensor]     # per sample (K_b, prompt_dim), the answer's [SEG] tokens in order
    seg_hidden: list[torch.Tensor]  # per sample (K_b, hidden)
    logits: torch.Tensor            # (B, L, vocab) LLM logits (text cross entropy)
    labels: torch.Tensor            # (B, L) answer tokens, IGNORE_INDEX elsewhere
    answers: list[ParsedAnswer]     # phrases of each answer; ``seg_index`` indexes ``prompts[b]``


@dataclass
class GeneratedAnswer:
    """A greedily generated answer, its phrases and one SAM 2 prompt per generated [SEG]."""

    answer: ParsedAnswer
    token_ids: list[int]            # generated tokens, without the final </s>
    prompts: torch.Tensor           # (K, prompt_dim)
    seg_hidden: torch.Tensor        # (K, hidden)
    finished: bool                  # ended with </s> (False: cut at max_new_tokens)

    @property
    def text(self) -> str:
        return self.answer.text


class SegProjection(nn.Sequential):
    """hidden -> hidden -> prompt dim; the layout of GLUS/LISA ``text_hidden_fcs[0]``."""

    def __init__(self, hidden: int, out_dim: int) -> None:
        super().__init__(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim), nn.Dropout(0.0))


class _OfficialConversationOnly:
    """``GLUSModel.prompts`` of a model for the released weights: their prompts are the official conversation."""

    def __getattr__(self, name: str):
        raise ValueError("this model follows the official GLUS conversation (config 'official'): segment videos "
                         "with VideoSegmenter (glus_ros.official_glus); glus_ros's own prompt format "
                         f"(PromptBuilder.{name}) is not defined for it")


# a trainable group that brings others with it: the full LLM includes its token rows
GROUP_IMPLIES = {"llm": ("token_embeddings",)}


class GLUSModel(nn.Module):
    def __init__(self, cfg: GLUSConfig, tokenizer: PreTrainedTokenizerBase, empty_llm: bool = False) -> None:
        """``empty_llm``: the language model on the meta device, for a checkpoint loader to assign (official
        releases; glus_ros.model.official_checkpoint)."""
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        if cfg.official is None:
            self.prompts = PromptBuilder(tokenizer, cfg.vlm)
            image_id = self.prompts.image_id
        else:
            from glus_ros.model.official_prompt import IMAGE_PLACEHOLDER

            self.prompts = _OfficialConversationOnly()  # type: ignore[assignment]
            image_id = IMAGE_PLACEHOLDER
        self.vlm = VisionLanguageModel(cfg.vlm, len(tokenizer), tokenizer.pad_token_id, image_id, empty_llm)
        self.sam = SAM2Head(cfg.sam2, cfg.memory.temporal_pos_enc, cfg.decoder.pad_point, cfg.memory.encoder_input,
                            cfg.memory.read_order)
        self.seg_projection = SegProjection(self.vlm.hidden_size, self.sam.prompt_dim)
        # low-rank LLM deltas for one kind of request (task_adapter.py); plain attribute, not in state_dict
        self.task_adapters: dict[str, TaskAdapter] = {}
        region_id = tokenizer.convert_tokens_to_ids(REGION_TOKEN)
        if region_id is not None and region_id != tokenizer.unk_token_id:
            self.vlm.region_id = int(region_id)
        self.key_frame: KeyFrameSelector | None = None
        if cfg.key_frame is not None:
            self.key_frame = KeyFrameSelector(self.vlm.hidden_size, cfg.key_frame)
        self.point_head: PointHead | None = None
        if cfg.points is not None:
            self.point_head = PointHead(self.vlm.hidden_size, cfg.points.max_points, cfg.points.locate)
        self.grounding_map: GroundingMap | None = None
        if cfg.vlm.grounding_map:
            with torch.random.fork_rng(devices=[]):  # the other modules initialise as without it
                self.grounding_map = GroundingMap(self.vlm.hidden_size, spatial=cfg.vlm.grounding_spatial,
                                                  motion_frames=cfg.vlm.grounding_motion)

    def add_key_frame_selector(self, cfg: KeyFrameConfig | None = None) -> KeyFrameSelector:
        """Attach a new (untrained) selector; the config then saves it with the model."""
        self.cfg.key_frame = cfg or KeyFrameConfig()
        self.key_frame = KeyFrameSelector(self.vlm.hidden_size, self.cfg.key_frame).to(self.device)
        return self.key_frame

    def add_point_head(self, cfg: PointsConfig | None = None) -> PointHead:
        """Attach a new (untrained) point head; the config then saves it with the model."""
        self.cfg.points = cfg or PointsConfig()
        self.point_head = PointHead(self.vlm.hidden_size, self.cfg.points.max_points,
                                    self.cfg.points.locate).to(self.device)
        return self.point_head

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, spec: str | Path | GLUSConfig, checkpoint_dir: Path | None = None,
                    overrides: dict[str, Any] | None = None) -> GLUSModel:
        cfg = spec if isinstance(spec, GLUSConfig) else load_config(spec, overrides)
        tokenizer_dir = checkpoint_dir
        if isinstance(spec, (str, Path)) and (folder := model_dir_of(spec)) is not None:
            tokenizer_dir = folder
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
        rows = {id(p) for p in [*self.vlm.language_model.embed_tokens.parameters(),
                                 *self.vlm.llava.lm_head.parameters()]}
        # the token rows (input embeddings + LM head) apart from the rest of the LLM: the released GLUS trains them
        # fully beside LoRA (its new tokens); "llm" (the full LLM) includes them, see apply_trainable
        token_embeddings = [p for p in [*self.vlm.language_model.parameters(), *self.vlm.llava.lm_head.parameters()]
                            if id(p) in rows]
        llm = [p for p in self.vlm.language_model.parameters() if id(p) not in rows]
        return {
            "vision_tower": list(self.vlm.vision_tower.parameters()),
            "llm": llm,
            "token_embeddings": list({id(p): p for p in token_embeddings}.values()),
            "llm_lora": [],  # LoRA adapters are added by the trainer (peft); the base LLM stays frozen
            "projections": [*self.vlm.projector.parameters(), *self.seg_projection.parameters(),
                            *(self.grounding_map.parameters() if self.grounding_map is not None else []),
                            *(self.vlm.visual_position.parameters() if self.vlm.visual_position is not None else [])],
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
            for implied in (name, *GROUP_IMPLIES.get(name, ())):
                for p in table[implied]:
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
                    answers: list[str] | None = None, context_pixels: torch.Tensor | None = None,
                    prefix_cache: ContextPrefixCache | None = None) -> SegOutput:
        """One MLLM pass per sample over [context frames, query frames, expression, answer].

        context_embeds (B, Nc, T, D), query_embeds (B, Nq, T, D). Returns one prompt per query frame.
        ``context_pixels`` (B, Nc, 3, S, S): the context frames as the vision tower's input
        (``clip_input``), needed by a model whose grounding map has a motion field. ``prefix_cache``
        (inference): reuse the LLM's keys/values over the context frames and their motion field from an
        earlier call with the same context (``prefix_cache.py``); the result is the same up to float rounding.
        """
        num_query = query_embeds.shape[1]
        num_context = context_embeds.shape[1]
        frames, shown = self._prompt_frames(context_embeds, query_embeds)
        encoded = [self.prompts.encode(e, num_context, num_query, None if answers is None else answers[i], shown)
                   for i, e in enumerate(expressions)]
        ids, mask, labels = self.prompts.batch(encoded)
        ids, mask = ids.to(query_embeds.device), mask.to(query_embeds.device)
        route = routes(expressions, self.task_adapters)
        tasks = list(dict.fromkeys(route))
        if tasks == [None]:
            return self._seg_pass(ids, mask, labels, frames, shown, num_query, num_context, context_pixels,
                                  prefix_cache)
        parts: list[tuple[list[int], SegOutput]] = []
        for task in tasks:  # each request under the task adapter its expression routes to (None: the base)
            rows = [i for i, r in enumerate(route) if r == task]
            index = torch.tensor(rows, device=ids.device)
            with self.task_adapters[task].applied(self) if task is not None else contextlib.nullcontext():
                parts.append((rows, self._seg_pass(
                    ids[index], mask[index], labels[index.cpu()], frames[index], shown, num_query, num_context,
                    None if context_pixels is None else context_pixels[index.to(context_pixels.device)],
                    prefix_cache, task)))
        return parts[0][1] if len(parts) == 1 else _merge_rows(parts)

    def _seg_pass(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, frames: torch.Tensor,
                  shown: int, num_query: int, num_context: int, context_pixels: torch.Tensor | None,
                  prefix_cache: ContextPrefixCache | None = None, task: str | None = None) -> SegOutput:
        """The MLLM pass and the heads on its [SEG] states, for one batch of encoded prompts."""
        batch = ids.shape[0]
        if prefix_cache is None or self.training:
            logits, hidden_states = self.vlm(ids, mask, frames)
        else:
            length = prefix_cache.prefix_length(self.prompts, num_context, num_query, shown)
            logits, hidden_states = prefix_cache.run(self.vlm, ids, mask, frames, length, task)
        hidden = hidden_states[self.cfg.vlm.seg_hidden_layer]
        seg_positions = ids == self.prompts.seg_id
        counts = seg_positions.sum(dim=1)
        if not bool((counts == num_query).all()):
            raise ValueError(f"expected one [SEG] per query frame ({num_query}), answers hold {counts.tolist()}")
        seg_hidden = hidden[seg_positions].reshape(batch, num_query, -1)
        prompts = self.seg_projection(seg_hidden.float())
        grounding = states = anchors = None
        if shown:
            states = self._query_token_states(hidden, ids, num_query)
        motion = None
        if self.grounding_map is not None and states is not None:
            words = None
            if self.grounding_map.spatial is not None:
                words = self.grounding_map.spatial.words(seg_hidden.float(), hidden_states[0].float(),
                                                         self.prompts.word_mask(ids, mask, labels))
            tokens = states.shape[-2]
            if prefix_cache is None or context_pixels is None:
                motion = self._motion_field(context_pixels, num_context, tokens)
            else:
                motion = prefix_cache.motion(context_pixels,
                                             lambda: self._motion_field(context_pixels, num_context, tokens), task)
            grounding = self.grounding_map(seg_hidden, states, words,
                                           None if motion is None else motion[:, None].expand(-1, num_query, -1, -1))
            if words is not None:
                anchors = self.grounding_map.anchors(seg_hidden, states, words)
        return SegOutput(prompts=prompts, seg_hidden=seg_hidden, logits=logits, grounding=grounding,
                         query_states=states, anchors=anchors, motion=motion)

    def _motion_field(self, context_pixels: torch.Tensor | None, num_context: int, tokens: int) -> torch.Tensor | None:
        """(B, T, motion_dim) motion vectors of the context frames, or None (no motion field, or no context
        frames: the local-only ablation)."""
        if self.grounding_map is None or self.grounding_map.motion is None or num_context == 0:
            return None
        if context_pixels is None:
            raise ValueError("this model's grounding map reads the context frames' motion "
                             "(vlm.grounding_motion): pass context_pixels to seg_prompts")
        if context_pixels.shape[1] != num_context:
            raise ValueError(f"context_pixels holds {context_pixels.shape[1]} frames, context_embeds {num_context}")
        return self.grounding_map.motion(context_pixels.to(self.device), grid_side(tokens))

    def _query_token_states(self, hidden: torch.Tensor, ids: torch.Tensor, num_query: int) -> torch.Tensor:
        """(B, L, D) hidden states -> (B, num_query, T, D) at the visual tokens of the query frames (the last ones)."""
        batch, tokens = hidden.shape[0], self.cfg.vlm.tokens_per_frame
        states = hidden[ids == self.prompts.image_id].reshape(batch, -1, tokens, hidden.shape[-1])
        return states[:, -num_query:]

    # --- grounded answers and region prompts (GLaMM) -----------------------------------------
    def region_embeddings(self, pixels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(R, 3, s, s) region-blanked CLIP inputs and (R, 4) normalised boxes -> (R, hidden) LLM inputs.

        RoI average of the un-pooled patch features, then the frames' own projector (GLaMM reuses its V-L layer).
        """
        pooled = roi_average(self.vlm.patch_features(pixels), boxes)
        return self.vlm.projector(pooled)

    def encode_regions(self, images: Sequence[np.ndarray] | Mapping[int, np.ndarray],
                       regions: Sequence[Region]) -> torch.Tensor:
        """Regions on HxWx3 uint8 ``images[region.frame]`` -> (R, hidden) embeddings for the ``<region>`` tokens."""
        if not regions:
            return torch.zeros(0, self.vlm.hidden_size, device=self.device)
        pixels, boxes = [], []
        for i, region in enumerate(regions):
            if not isinstance(region, Region):
                raise ValueError(f"region {i} must be a Region, got {type(region).__name__}")
            frame = region.frame
            known = frame in images if isinstance(images, Mapping) else 0 <= frame < len(images)
            if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not known:
                raise ValueError(f"region {i} ({region.describe()}) is on frame {frame!r}, but only "
                                 f"{len(images)} frames were given")
            px, box = region_input(np.asarray(images[int(frame)]), region, self.cfg.vlm.image_size,
                                   self.cfg.vlm.patches_per_side)
            pixels.append(px)
            boxes.append(box)
        return self.region_embeddings(torch.stack(pixels).to(self.device), torch.stack(boxes).to(self.device))

    def _prompt_frames(self, context_embeds: torch.Tensor, query_embeds: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The frame embeddings placed in the prompt and how many query frames are shown (the VideoMolmo temporal
        module, when configured, runs over them in the order given)."""
        num_query = query_embeds.shape[1]
        shown = num_query if self.cfg.sampling.query_in_prompt else 0
        frames = torch.cat([context_embeds, query_embeds], dim=1) if shown else context_embeds
        if self.vlm.temporal is not None:
            frames = self.vlm.temporal(frames)
        return frames, shown

    def _flat_regions(self, ids: list[torch.Tensor], region_embeds: torch.Tensor | Sequence[torch.Tensor] | None,
                      ) -> torch.Tensor | None:
        """Check every sample's ``<region>`` count against its regions; their embeddings in reading order."""
        per_sample = [region_embeds] if isinstance(region_embeds, torch.Tensor) else region_embeds
        if per_sample is not None and len(per_sample) != len(ids):
            raise ValueError(f"regions given for {len(per_sample)} samples, the batch has {len(ids)}")
        flat = []
        for b, sample_ids in enumerate(ids):
            wanted = int((sample_ids == self.vlm.region_id).sum()) if self.vlm.region_id is not None else 0
            given = 0 if per_sample is None or per_sample[b] is None else int(per_sample[b].shape[0])
            if wanted != given:
                raise ValueError(f"sample {b}: the question holds {wanted} {REGION_TOKEN} tokens but {given} "
                                 "regions were given")
            if given:
                flat.append(per_sample[b])  # type: ignore[index]
        return torch.cat(flat).to(self.device) if flat else None

    def grounded_prompts(self, context_embeds: torch.Tensor, query_embeds: torch.Tensor,
                         questions: str | Sequence[str], answers: str | Sequence[str | None] | None = None,
                         region_embeds: torch.Tensor | Sequence[torch.Tensor] | None = None,
                         answer_ids: Sequence[Sequence[int]] | None = None) -> GroundedOutput:
        """Teacher-forced grounded answers: one MLLM pass per sample, one prompt per [SEG] of its answer.

        A phrase ``<p>two red circles</p> [SEG]`` carries ONE [SEG] whose prompt serves every query frame of
        the window (one per query frame per phrase would multiply the answer, and with it the sequence, by
        the window length). An answer of None is the referring answer (one [SEG] per query frame), so a
        ``track <region>`` question runs the normal per-frame path. ``region_embeds`` (per sample (R_b, hidden),
        from :meth:`encode_regions`) fill the ``<region>`` tokens; ``answer_ids`` give exact answer tokens.
        """
        batch, num_query, num_context = query_embeds.shape[0], query_embeds.shape[1], context_embeds.shape[1]
        questions = [questions] if isinstance(questions, str) else list(questions)
        if answers is None or isinstance(answers, str):
            answers = [answers] * batch
        answers = list(answers)
        if len(questions) != batch or len(answers) != batch or (answer_ids is not None and len(answer_ids) != batch):
            raise ValueError(f"{len(questions)} questions / {len(answers)} answers for a batch of {batch}")
        frames, shown = self._prompt_frames(context_embeds, query_embeds)
        encoded = [self.prompts.encode_grounded(q, num_context, num_query, answers[b], shown,
                                                None if answer_ids is None else answer_ids[b])
                   for b, q in enumerate(questions)]
        regions = self._flat_regions([e.input_ids for e in encoded], region_embeds)
        ids, mask, labels = self.prompts.batch(encoded)
        ids, mask = ids.to(query_embeds.device), mask.to(query_embeds.device)
        logits, hidden_states = self.vlm(ids, mask, frames, regions)
        hidden = hidden_states[self.cfg.vlm.seg_hidden_layer]
        seg_positions = ids == self.prompts.seg_id
        seg_hidden = hidden[seg_positions]
        prompts = self.seg_projection(seg_hidden.float())
        counts = seg_positions.sum(dim=1).tolist()
        parsed = [parse_answer(e.labels[e.labels != IGNORE_INDEX].tolist(), self.tokenizer) for e in encoded]
        return GroundedOutput(prompts=list(prompts.split(counts)), seg_hidden=list(seg_hidden.split(counts)),
                              logits=logits, labels=labels.to(logits.device), answers=parsed)

    def _banned_ids(self, vocab: int) -> torch.Tensor:
        """Tokens generation may not emit: frames, regions, padding and the other reserved tokens."""
        keep = set(self.tokenizer.convert_tokens_to_ids([PHRASE_START, PHRASE_END, SEG_TOKEN]))
        keep.add(self.tokenizer.eos_token_id)
        banned = set(self.tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, *EXTRA_SPECIAL_TOKENS]))
        banned |= set(self.tokenizer.all_special_ids)
        banned |= set(range(len(self.tokenizer), vocab))  # rows the LLM has beyond the tokenizer
        return torch.tensor(sorted(i for i in banned - keep if i is not None and 0 <= i < vocab), dtype=torch.long)

    def generate_answer(self, context_embeds: torch.Tensor, query_embeds: torch.Tensor, question: str,
                        max_new_tokens: int = 64, region_embeds: torch.Tensor | None = None) -> GeneratedAnswer:
        """Greedy answer to ``question`` about one window (embeds (1, N, T, D) or (N, T, D)), stopping at </s>.

        Each generated [SEG] is fed back like any token; its hidden state at that step (the state the
        teacher-forced pass reads) goes through the projection to a SAM 2 prompt.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if context_embeds.dim() == 3:
            context_embeds, query_embeds = context_embeds[None], query_embeds[None]
        if query_embeds.shape[0] != 1:
            raise ValueError(f"generate_answer reads one window at a time, got a batch of {query_embeds.shape[0]}")
        frames, shown = self._prompt_frames(context_embeds, query_embeds)
        prefix = self.prompts.prefix_ids(question, context_embeds.shape[1], query_embeds.shape[1], shown)
        regions = self._flat_regions([prefix], region_embeds)
        lm, head = self.vlm.language_model, self.vlm.llava.lm_head
        embeds = self.vlm.input_embeddings(prefix[None].to(query_embeds.device), frames, regions)
        out = lm(inputs_embeds=embeds, use_cache=True, output_hidden_states=True)
        logits = head(out.hidden_states[-1][:, -1])
        banned = self._banned_ids(logits.shape[-1]).to(logits.device)
        eos, seg = self.tokenizer.eos_token_id, self.prompts.seg_id
        generated: list[int] = []
        seg_states: list[torch.Tensor] = []
        finished = False
        for _ in range(max_new_tokens):
            scores = logits.float()
            scores[:, banned] = float("-inf")
            token = int(scores.argmax(dim=-1)[0])
            if token == eos:
                finished = True
                break
            generated.append(token)
            step = lm.embed_tokens(torch.tensor([[token]], device=embeds.device))
            out = lm(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True,
                     output_hidden_states=True)
            if token == seg:
                seg_states.append(out.hidden_states[self.cfg.vlm.seg_hidden_layer][0, -1])
            logits = head(out.hidden_states[-1][:, -1])
        seg_hidden = torch.stack(seg_states) if seg_states else embeds.new_zeros(0, self.vlm.hidden_size)
        prompts = self.seg_projection(seg_hidden.float())
        return GeneratedAnswer(parse_answer(generated, self.tokenizer), generated, prompts, seg_hidden, finished)

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

    def points_from_seg(self, seg_hidden: torch.Tensor, query_states: torch.Tensor | None = None) -> torch.Tensor:
        """[SEG] states (B, Nq, hidden) -> raw point slots (B, Nq, K, 3); decode with ``point_head.decode_points``.

        ``query_states`` (``SegOutput.query_states``, the same query frames) feed an attending head.
        """
        if self.point_head is None:
            raise ValueError("this model has no point head (add 'points: {}' to its config and train it)")
        return self.point_head(seg_hidden.float(), query_states)

    # --- the SAM 2 step ---------------------------------------------------------------------
    def track_step(self, frame: FrameFeatures, prompt: torch.Tensor, bank: MemoryBank | None,
                   grounding: torch.Tensor | None = None) -> MaskPrediction:
        """Decode one query frame from its [SEG] prompt (B, prompt_dim) and the memory bank.

        ``grounding`` (B, G, G): this frame's grounding-map logits, given to SAM 2 as its mask prompt; None
        (frames the MLLM did not see, models without the map) leaves the mask prompt empty.
        """
        masks = None
        if grounding is not None:
            masks = mask_prompt(grounding, self.sam.sam.sam_prompt_encoder.mask_input_size)
        return self.sam.step(frame, bank, prompt.unsqueeze(1), mask_inputs=masks)

    def track_steps(self, frame: FrameFeatures, prompts: Sequence[torch.Tensor], banks: Sequence[MemoryBank | None],
                    groundings: Sequence[torch.Tensor | None]) -> list[MaskPrediction]:
        """:meth:`track_step` for several tracks (targets) on one frame in one batched SAM 2 step: track b has its
        own prompt ``prompts[b]`` (1, prompt_dim), memory bank and grounding-map logits (1, G, G) or None."""
        if len(prompts) == 1:
            return [self.track_step(frame, prompts[0], banks[0], groundings[0])]
        size = self.sam.sam.sam_prompt_encoder.mask_input_size
        masks = [None if g is None else mask_prompt(g, size) for g in groundings]
        return self.sam.step_batch(frame, list(banks), torch.cat(list(prompts)).unsqueeze(1), masks)
