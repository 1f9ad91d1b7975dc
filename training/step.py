"""One GLUS training forward pass on a batch of clips: the end-to-end graph the losses act on.

For each sample: context + query frames through the vision tower, one MLLM pass that emits a [SEG]
per query frame, then the query frames decoded in order by SAM 2 with a training memory bank
(stride 1, graph kept), so the mask loss of a later frame reaches memory attention, the memory
encoder and the earlier frames' [SEG] tokens (GLUS Sec. 4.2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from glus_ros.model.glus import GLUSModel
from glus_ros.training.aux_heads import AuxHeads, aux_losses
from glus_ros.training.losses import LossWeights, SegTokenBank, glus_loss


def forward_clips(model: GLUSModel, batch: dict[str, Any], weights: LossWeights | None = None,
                  seg_bank: SegTokenBank | None = None, visibility_weight: float = 1.0,
                  aux_heads: AuxHeads | None = None, aux_weights: tuple[float, float] = (0.0, 0.0),
                  ) -> dict[str, torch.Tensor]:
    """Losses for a collated batch (see ``glus_ros.training.data.collate_clips`` for its keys).

    Besides the paper's terms, the SAM 2 object-score head is supervised with whether the object is
    visible in the frame (as SAM 2 trains it): inference hides the mask when that score says absent.
    ``aux_heads`` with ``aux_weights`` (point, attributes) add the auxiliary [SEG] terms (aux_heads.py).
    """
    context, query = batch["context_clip"], batch["query_clip"]
    batch_size, num_context = context.shape[:2]
    num_query = query.shape[1]
    device = model.device
    frames = torch.cat([context, query], dim=1).to(device)
    embeds = model.encode_clip_frames(frames.flatten(0, 1)).unflatten(0, (batch_size, num_context + num_query))
    out = model.seg_prompts(embeds[:, :num_context], embeds[:, num_context:], list(batch["expressions"]))
    labels = model.labels_for(list(batch["expressions"]), num_context, num_query).to(device)

    sam_feats = model.encode_sam_frames(batch["query_sam"].to(device).flatten(0, 1))
    memory = model.new_memory_bank()
    mask_logits, object_scores = [], []
    for q in range(num_query):
        rows = torch.arange(batch_size, device=device) * num_query + q
        pred = model.track_step(sam_feats.select(rows), out.prompts[:, q], memory)
        mask_logits.append(pred.logits[:, 0])
        object_scores.append(pred.object_score[:, 0])
    logits = torch.stack(mask_logits, dim=1)                 # (B, Nq, S, S)
    targets = batch["query_masks"].to(device).float()         # (B, Nq, S, S)
    anchors = out.seg_hidden.float().mean(dim=1)              # one [SEG] embedding per expression
    losses = glus_loss(out.logits.float(), labels, logits.flatten(0, 1), targets.flatten(0, 1),
                       seg_embeddings=anchors, object_ids=batch["object_keys"].to(device), bank=seg_bank,
                       weights=weights)
    visible = (targets.flatten(2).amax(dim=2) > 0).float()
    losses["visibility"] = F.binary_cross_entropy_with_logits(torch.stack(object_scores, dim=1), visible)
    losses["total"] = losses["total"] + visibility_weight * losses["visibility"]
    if aux_heads is not None:
        aux = aux_losses(aux_heads(out.seg_hidden.float()), targets, batch["attributes"])
        losses.update(aux)
        losses["total"] = losses["total"] + aux_weights[0] * aux["aux_point"] + aux_weights[1] * aux["aux_attributes"]
    if seg_bank is not None:
        seg_bank.add(anchors.detach(), batch["object_keys"])
    losses["mask_logits"] = logits.detach()
    return losses
