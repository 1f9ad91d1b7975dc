"""The SAM 2 side of GLUS: image encoder, memory attention, mask decoder and memory encoder.

Built from the ``sam2`` package's own modules (``SAM2Base`` instantiated with hydra from the
``sam2:`` node of a model YAML, the same structure as sam2's configs), so official SAM 2 ``.pt``
weights load unchanged. The [SEG] embedding enters the mask decoder as a sparse prompt (LISA/GLUS);
past masks enter through memory attention, with gradients in training mode (GLUS trains the memory
end to end; the reference code wraps it in no_grad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from glus_ros.model.memory_bank import MemoryBank


@dataclass
class FrameFeatures:
    """SAM 2 backbone output for a batch of frames, flattened as SAM 2 expects (HW, B, C)."""

    vision_feats: list[torch.Tensor]
    vision_pos: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]

    def select(self, index: torch.Tensor | slice) -> FrameFeatures:
        return FrameFeatures([f[:, index] for f in self.vision_feats],
                             [p[:, index] for p in self.vision_pos], self.feat_sizes)

    def expand(self, batch: int) -> FrameFeatures:
        """One frame's features (batch 1) seen ``batch`` times, without a copy: one decode for many targets."""
        if self.vision_feats[0].shape[1] != 1:
            raise ValueError(f"expand needs the features of one frame, got a batch of {self.vision_feats[0].shape[1]}")
        return FrameFeatures([f.expand(-1, batch, -1) for f in self.vision_feats],
                             [p.expand(-1, batch, -1) for p in self.vision_pos], self.feat_sizes)


@dataclass
class MaskPrediction:
    low_res_logits: torch.Tensor    # (B, 1, 4h, 4w)
    logits: torch.Tensor            # (B, 1, S, S) at the SAM input size
    iou: torch.Tensor               # (B, 1) predicted IoU
    object_score: torch.Tensor      # (B, 1) logit that the object is visible
    # what a tracking step read and wrote (set by SAM2Head.step; the parity traces compare them)
    conditioned: torch.Tensor | None = None  # (B, C, h, w) memory-conditioned features (None: nothing read)
    memory: torch.Tensor | None = None       # (B, mem_dim, h, w) the memory features written


def build_sam2(node: dict[str, Any]) -> nn.Module:
    """Instantiate ``SAM2Base`` from a config node (dict with hydra ``_target_`` keys)."""
    return instantiate(OmegaConf.create(node), _recursive_=True)


class SAM2Head(nn.Module):
    def __init__(self, sam2_node: dict[str, Any], temporal_pos_enc: bool = True, pad_point: bool = True,
                 encoder_input: str = "frame", read_order: str = "nearest_first") -> None:
        """The switches (config ``memory.temporal_pos_enc``, ``decoder.pad_point``, ``memory.encoder_input``)
        choose between SAM 2's own way and the official GLUS code's (false, false, "conditioned"): the memory
        position without SAM 2's temporal encoding, the [SEG] embedding as the whole sparse prompt, and the
        memory encoder reading the memory-conditioned features."""
        super().__init__()
        if encoder_input not in ("frame", "conditioned"):
            raise ValueError(f"encoder_input must be 'frame' or 'conditioned', got {encoder_input!r}")
        if read_order not in ("nearest_first", "farthest_first"):
            raise ValueError(f"read_order must be 'nearest_first' or 'farthest_first', got {read_order!r}")
        # the order memories enter memory attention (``memory.read_order``): the official GLUS code concatenates
        # them farthest first; the result differs from SAM 2's order only by float summation order
        self.farthest_first = read_order == "farthest_first"
        self.temporal_pos_enc = temporal_pos_enc
        self.pad_point = pad_point
        self.encoder_input = encoder_input
        self.sam = build_sam2(sam2_node)
        if self.sam.use_obj_ptrs_in_encoder:
            raise ValueError("GLUS reads the memory without object pointers: set use_obj_ptrs_in_encoder: false")
        self.image_size = int(self.sam.image_size)
        self.prompt_dim = int(self.sam.sam_prompt_embed_dim)

    # --- image ------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> FrameFeatures:
        """images: (B, 3, S, S) normalised. One backbone pass per frame, reused by every window."""
        backbone_out = self.sam.forward_image(images)
        _, feats, pos, sizes = self.sam._prepare_backbone_features(backbone_out)
        return FrameFeatures(feats, pos, sizes)

    # --- memory read ------------------------------------------------------------------------
    def condition_on_memory(self, frame: FrameFeatures, bank: MemoryBank | None,
                            farthest_first: bool = False) -> torch.Tensor:
        """Top-level features fused with the memory bank through memory attention -> (B, C, H, W).

        ``farthest_first``: the memories in the order the official GLUS code concatenates them (the result
        differs only by float summation order).
        """
        reads = bank.read() if bank is not None else []
        if farthest_first or self.farthest_first:
            reads = reads[::-1]
        return self._read_memory(frame, [reads])

    def _read_memory(self, frame: FrameFeatures, reads: list[list[tuple[int, Any]]]) -> torch.Tensor:
        """Memory attention for a batch whose row b reads ``reads[b]`` (the same slots ``t_rel`` in every row;
        one row may stand for the whole batch) -> (B, C, H, W)."""
        sam = self.sam
        top = frame.vision_feats[-1]
        _hw, batch, channels = top.shape
        h, w = frame.feat_sizes[-1]
        if not reads[0]:
            # first frame of a track: SAM 2 adds the learned no-memory embedding
            return (top + sam.no_mem_embed).permute(1, 2, 0).reshape(batch, channels, h, w)
        memory, memory_pos = [], []
        for slot, (t_rel, _entry) in enumerate(reads[0]):
            entries = [row[slot][1] for row in reads]
            feats = torch.cat([e.features for e in entries]).to(top.device)
            memory.append(feats.flatten(2).permute(2, 0, 1).to(top.dtype))
            enc = torch.cat([e.pos_enc for e in entries]).to(top.device).flatten(2).permute(2, 0, 1)
            if self.temporal_pos_enc:
                enc = enc + sam.maskmem_tpos_enc[t_rel - 1]
            memory_pos.append(enc.to(top.dtype))
        fused = sam.memory_attention(
            curr=frame.vision_feats[-1:], curr_pos=frame.vision_pos[-1:],
            memory=torch.cat(memory, dim=0), memory_pos=torch.cat(memory_pos, dim=0), num_obj_ptr_tokens=0,
        )
        return fused.permute(1, 2, 0).reshape(batch, channels, h, w)

    # --- decode -----------------------------------------------------------------------------
    def high_res_features(self, frame: FrameFeatures) -> list[torch.Tensor] | None:
        if not self.sam.use_high_res_features_in_sam:
            return None
        batch = frame.vision_feats[0].shape[1]
        return [f.permute(1, 2, 0).reshape(batch, -1, *size)
                for f, size in zip(frame.vision_feats[:-1], frame.feat_sizes[:-1], strict=True)]

    def decode(self, pix_feat: torch.Tensor, frame: FrameFeatures, sparse_prompt: torch.Tensor | None = None,
               point_coords: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None) -> MaskPrediction:
        """Mask decoder with the [SEG] embedding (B, N, C) and/or points (B, P, 2) in SAM input pixels.

        ``mask_inputs`` (B, 1, 4h, 4w): mask-prompt logits (the grounding map), through the prompt encoder.
        """
        sam = self.sam
        batch = pix_feat.shape[0]
        masks = None if mask_inputs is None else mask_inputs.to(pix_feat.dtype)
        if point_coords is None and not self.pad_point and sparse_prompt is not None:
            # the official GLUS prompt: no points, the [SEG] embedding is the whole sparse prompt
            sparse, dense = sam.sam_prompt_encoder(points=None, boxes=None, masks=masks)
            # (in the prompt's dtype, as the official code casts it: bf16 with bf16 weights)
            sparse, dense = sparse.expand(batch, -1, -1).to(sparse_prompt.dtype), dense.expand(batch, -1, -1, -1)
        else:
            if point_coords is None:
                point_coords = pix_feat.new_zeros(batch, 1, 2)
                point_labels = -torch.ones(batch, 1, dtype=torch.int32, device=pix_feat.device)
            sparse, dense = sam.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=masks)
        if sparse_prompt is not None:
            sparse = torch.cat([sparse_prompt.to(sparse.dtype), sparse], dim=1)
        low_res, iou, _tokens, object_score = sam.sam_mask_decoder(
            image_embeddings=pix_feat, image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=False, repeat_image=False, high_res_features=self.high_res_features(frame),
        )
        low_res = low_res.float()
        logits = F.interpolate(low_res, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return MaskPrediction(low_res, logits, iou.float(), object_score.float())

    def dense_pe(self) -> torch.Tensor:
        """The prompt encoder's dense positional encoding, in the dtype of its weights.

        sam2 1.1 builds the grid in float32, which fails against bf16 weights; the SAM 2.0 code GLUS ships
        builds it in the weights' dtype, and so does this (float32 weights: sam2's own result).
        """
        encoder = self.sam.sam_prompt_encoder
        matrix = encoder.pe_layer.positional_encoding_gaussian_matrix
        if matrix.dtype == torch.float32:
            return encoder.get_dense_pe()
        h, w = encoder.image_embedding_size
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return encoder.pe_layer._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)[None]

    # --- memory write -----------------------------------------------------------------------
    def encode_memory(self, frame: FrameFeatures, prediction: MaskPrediction,
                      conditioned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory encoder on the predicted mask and the frame's own (non-memory) features, or, with
        ``encoder_input: conditioned``, the memory-conditioned ones (``conditioned``, (B, C, H, W))."""
        feats_in = frame.vision_feats
        if self.encoder_input == "conditioned":
            if conditioned is None:
                raise ValueError("encoder_input 'conditioned': pass the memory-conditioned features")
            feats_in = [*frame.vision_feats[:-1], conditioned.flatten(2).permute(2, 0, 1)]
        feats, pos = self.sam._encode_new_memory(
            current_vision_feats=feats_in, feat_sizes=frame.feat_sizes,
            pred_masks_high_res=prediction.logits.to(self.sam.no_mem_embed.dtype),  # the weights' dtype
            object_score_logits=prediction.object_score,
            is_mask_from_pts=False,
        )
        return feats, pos[-1]

    def step(self, frame: FrameFeatures, bank: MemoryBank | None, sparse_prompt: torch.Tensor | None,
             point_coords: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
             mask_inputs: torch.Tensor | None = None) -> MaskPrediction:
        """Read memory, decode one frame, write its memory: one tracking step."""
        read = bool(bank.read()) if bank is not None else False
        pix_feat = self.condition_on_memory(frame, bank)
        prediction = self.decode(pix_feat, frame, sparse_prompt, point_coords, point_labels, mask_inputs)
        prediction.conditioned = pix_feat if read else None
        if bank is not None:
            prediction.memory, memory_pos = self.encode_memory(frame, prediction, pix_feat)
            bank.add(prediction.memory, memory_pos)
        return prediction

    def step_batch(self, frame: FrameFeatures, banks: list[MemoryBank | None], sparse_prompts: torch.Tensor,
                   mask_inputs: list[torch.Tensor | None]) -> list[MaskPrediction]:
        """:meth:`step` for several tracks on one frame (batch 1 features) at once: row b has its own prompt
        ``sparse_prompts[b]`` (N, C), mask prompt and memory bank. Memory reads are batched over the rows that read
        the same slots, the decoder over the rows with / without a mask prompt, the memory write over all rows."""
        count = len(banks)
        if sparse_prompts.shape[0] != count or len(mask_inputs) != count:
            raise ValueError(f"{count} banks but {sparse_prompts.shape[0]} prompts / {len(mask_inputs)} mask inputs")
        reads = [bank.read() if bank is not None else [] for bank in banks]
        if self.farthest_first:
            reads = [row[::-1] for row in reads]
        pix: list[torch.Tensor | None] = [None] * count
        groups: dict[tuple, list[int]] = {}
        for b, row in enumerate(reads):
            key = tuple((t_rel, tuple(e.features.shape)) for t_rel, e in row)
            groups.setdefault(key, []).append(b)
        for rows in groups.values():
            fused = self._read_memory(frame.expand(len(rows)), [reads[b] for b in rows])
            for j, b in enumerate(rows):
                pix[b] = fused[j:j + 1]
        predictions: list[MaskPrediction | None] = [None] * count
        for with_mask in (False, True):
            rows = [b for b in range(count) if (mask_inputs[b] is not None) == with_mask]
            if not rows:
                continue
            masks = torch.cat([mask_inputs[b] for b in rows]) if with_mask else None
            pred = self.decode(torch.cat([pix[b] for b in rows]), frame.expand(len(rows)),
                               sparse_prompts[rows], mask_inputs=masks)
            for j, b in enumerate(rows):
                predictions[b] = MaskPrediction(pred.low_res_logits[j:j + 1], pred.logits[j:j + 1],
                                                pred.iou[j:j + 1], pred.object_score[j:j + 1])
        done = [p for p in predictions if p is not None]
        writers = [b for b in range(count) if banks[b] is not None]
        if writers:
            both = MaskPrediction(*(torch.cat([getattr(done[b], f) for b in writers])
                                    for f in ("low_res_logits", "logits", "iou", "object_score")))
            conditioned = torch.cat([pix[b] for b in writers]) if self.encoder_input == "conditioned" else None
            feats, pos = self.encode_memory(frame.expand(len(writers)), both, conditioned)
            for j, b in enumerate(writers):
                banks[b].add(feats[j:j + 1], pos[j:j + 1])  # type: ignore[union-attr]
        return done
