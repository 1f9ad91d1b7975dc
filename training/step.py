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
from glus_ros.model.grounding_map import grid_targets, grounding_pick_loss
from glus_ros.training.aux_heads import AuxHeads, aux_losses, motion_cell_loss
from glus_ros.training.losses import LossWeights, SegTokenBank, glus_loss, mask_bce, mask_dice, text_cross_entropy
from glus_ros.training.point_losses import point_set_loss


def forward_clips(model: GLUSModel, batch: dict[str, Any], weights: LossWeights | None = None,
                  seg_bank: SegTokenBank | None = None, visibility_weight: float = 1.0,
                  aux_heads: AuxHeads | None = None, aux_weights: tuple[float, ...] = (0.0, 0.0, 0.0),
                  point_weights: tuple[float, float] = (0.0, 0.0),
                  grounding: tuple[float, ...] = (0.0, 0.0, 0.0)) -> dict[str, torch.Tensor]:
    """Losses for a collated batch (see ``glus_ros.training.data.collate_clips`` for its keys).

    Besides the paper's terms, the SAM 2 object-score head is supervised with whether the object is
    visible in the frame (as SAM 2 trains it): inference hides the mask when that score says absent.
    ``aux_heads`` with ``aux_weights`` (point, attributes[, cells]) add the auxiliary terms (aux_heads.py); the
    cell term needs ``batch["cell_labels"]``.
    ``point_weights`` (point head set loss, point-prompted masks) train pointing (VideoMolmo): the point
    head predicts one point per referred object, and SAM 2 learns to turn the true points into the mask.
    ``grounding`` (weight, drop share[, pick weight[, anchor weight[, motion weight]]]): the grounding-map
    BCE, the share of batches decoded without the map, the map's cross entropy over cells (models with
    ``vlm.grounding_map``; glus_ros/model/grounding_map.py), its anchors' cross entropy against
    ``batch["reference_cells"]`` (the reference object of relation expressions) and its motion field's
    regression of ``batch["motion_cells"]``; the last two are skipped for a batch without their labels.
    """
    context, query = batch["context_clip"], batch["query_clip"]
    batch_size, num_context = context.shape[:2]
    num_query = query.shape[1]
    device = model.device
    frames = torch.cat([context, query], dim=1).to(device)
    embeds = model.encode_clip_frames(frames.flatten(0, 1)).unflatten(0, (batch_size, num_context + num_query))
    out = model.seg_prompts(embeds[:, :num_context], embeds[:, num_context:], list(batch["expressions"]),
                            context_pixels=context.to(device))
    labels = model.labels_for(list(batch["expressions"]), num_context, num_query).to(device)

    sam_feats = model.encode_sam_frames(batch["query_sam"].to(device).flatten(0, 1))
    memory = model.new_memory_bank()
    mask_logits, object_scores = [], []
    maps = out.grounding
    use_maps = maps is not None and not (grounding[1] > 0 and float(torch.rand(())) < grounding[1])
    for q in range(num_query):
        rows = torch.arange(batch_size, device=device) * num_query + q
        pred = model.track_step(sam_feats.select(rows), out.prompts[:, q], memory,
                                maps[:, q] if use_maps and maps is not None else None)
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
    pick_weight = grounding[2] if len(grounding) > 2 else 0.0
    if maps is not None and (grounding[0] > 0 or pick_weight > 0):
        cells = grid_targets(targets, maps.shape[-1])
        if grounding[0] > 0:
            losses["grounding"] = F.binary_cross_entropy_with_logits(maps.float(), cells)
            losses["total"] = losses["total"] + grounding[0] * losses["grounding"]
        if pick_weight > 0:
            losses["grounding_pick"] = grounding_pick_loss(maps.float(), cells)
            losses["total"] = losses["total"] + pick_weight * losses["grounding_pick"]
    anchor_weight = grounding[3] if len(grounding) > 3 else 0.0
    if anchor_weight > 0 and batch.get("reference_cells") is not None:  # None: a batch with non-synthetic samples
        if out.anchors is None:
            raise ValueError("aux.grounding_anchor needs a model whose grounding map has spatial terms "
                             "(vlm.grounding_spatial)")
        references = batch["reference_cells"].to(device)[:, :, None].expand_as(out.anchors)
        losses["grounding_anchor"] = grounding_pick_loss(out.anchors.float(), references)
        losses["total"] = losses["total"] + anchor_weight * losses["grounding_anchor"]
    motion_weight = grounding[4] if len(grounding) > 4 else 0.0
    if motion_weight > 0 and batch.get("motion_cells") is not None:  # None: a batch with non-synthetic samples
        if out.motion is None:
            raise ValueError("aux.motion trains the grounding map's motion field: the model needs vlm.grounding_motion")
        losses["motion"] = motion_cell_loss(out.motion, batch["motion_cells"])
        losses["total"] = losses["total"] + motion_weight * losses["motion"]
    if aux_heads is not None:
        aux = aux_losses(aux_heads(out.seg_hidden.float()), targets, batch["attributes"])
        losses.update(aux)
        losses["total"] = losses["total"] + aux_weights[0] * aux["aux_point"] + aux_weights[1] * aux["aux_attributes"]
        cell_weight = aux_weights[2] if len(aux_weights) > 2 else 0.0
        if cell_weight > 0:
            if batch.get("cell_labels") is None:
                raise ValueError("the cell term needs cell labels in the batch (synthetic splits: SynthCellLabels)")
            losses["aux_cells"] = aux_heads.cell_losses(embeds, batch["cell_labels"])
            losses["total"] = losses["total"] + cell_weight * losses["aux_cells"]
    if point_weights[0] > 0 or point_weights[1] > 0:
        losses.update(_point_losses(model, batch, out.seg_hidden, out.query_states, sam_feats, targets,
                                    point_weights))
        losses["total"] = (losses["total"] + point_weights[0] * losses["points"]
                           + point_weights[1] * losses["point_masks"])
    if seg_bank is not None:
        seg_bank.add(anchors.detach(), batch["object_keys"])
    losses["mask_logits"] = logits.detach()
    return losses


def _point_losses(model: GLUSModel, batch: dict[str, Any], seg_hidden: torch.Tensor,
                  query_states: torch.Tensor | None, sam_feats, targets: torch.Tensor,
                  weights: tuple[float, float]) -> dict[str, torch.Tensor]:
    """Point-head set loss, and BCE + DICE of SAM 2 masks prompted by the true points (no [SEG], no memory)."""
    if model.point_head is None:
        raise ValueError("point losses need a model with a point head (model_overrides: {points: {}})")
    gt = batch.get("query_points")
    if gt is None:
        from glus_ros.training.point_losses import point_targets_from_union

        gt = point_targets_from_union(targets)
    raw = model.points_from_seg(seg_hidden, query_states)
    # slots specialise (presence in the matching cost); positives weighed as one slot against the K - 1 empty
    out = point_set_loss(raw, gt, match_presence=1.0, presence_pos_weight=float(raw.shape[2] - 1))
    if weights[1] <= 0:
        out["point_masks"] = out["points"] * 0.0
        return out
    batch_size, num_query = targets.shape[:2]
    size = model.sam.image_size
    rows, coords, labels = [], [], []
    for b in range(batch_size):
        for q in range(num_query):
            if gt[b][q]:
                rows.append(b * num_query + q)
                coords.append(torch.tensor(gt[b][q], dtype=torch.float32) * size)
    if not rows:
        out["point_masks"] = out["points"] * 0.0
        return out
    width = max(len(c) for c in coords)
    device = targets.device
    point_coords = torch.zeros(len(rows), width, 2, device=device)
    point_labels = -torch.ones(len(rows), width, dtype=torch.int32, device=device)  # -1: padding
    for i, c in enumerate(coords):
        point_coords[i, : len(c)] = c.to(device)
        point_labels[i, : len(c)] = 1
        labels.append(targets.flatten(0, 1)[rows[i]])
    pred = model.sam.step(sam_feats.select(torch.tensor(rows, device=device)), None, None, point_coords, point_labels)
    mask_targets = torch.stack(labels)
    logits = pred.logits[:, 0]
    out["point_masks"] = mask_bce(logits, mask_targets) + mask_dice(logits, mask_targets)
    return out


def forward_grounded(model: GLUSModel, batch: dict[str, Any], weights: LossWeights | None = None,
                     visibility_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Losses for a grounded batch (``glus_ros.training.data.collate_grounded``): answer CE + per-phrase masks.

    Each grounded phrase's ONE [SEG] prompts SAM 2 in every query frame of the clip, and every phrase is its
    own track (its own row of the memory bank, as separate banks at inference); a referring answer (answer
    None, ``track <region>``) prompts query frame q with its q-th [SEG]. Text-only answers add CE alone.
    """
    w = weights if weights is not None else LossWeights()
    context, query = batch["context_clip"], batch["query_clip"]
    batch_size, num_context = context.shape[:2]
    num_query = query.shape[1]
    device = model.device
    frames = torch.cat([context, query], dim=1).to(device)
    embeds = model.encode_clip_frames(frames.flatten(0, 1)).unflatten(0, (batch_size, num_context + num_query))
    regions = [model.encode_regions(batch["region_frames"][b], batch["regions"][b]) for b in range(batch_size)]
    out = model.grounded_prompts(embeds[:, :num_context], embeds[:, num_context:], list(batch["questions"]),
                                 list(batch["answers"]), regions)
    ce = text_cross_entropy(out.logits.float(), out.labels)
    rows, row_prompts, row_targets = [], [], []
    for b in range(batch_size):
        targets, prompts = batch["phrase_masks"][b], out.prompts[b]
        if batch["answers"][b] is None:
            if targets.shape[0] != 1 or prompts.shape[0] != num_query:
                raise ValueError(f"sample {b}: a referring answer needs 1 mask track and {num_query} [SEG], got "
                                 f"{targets.shape[0]} and {prompts.shape[0]}")
            row_prompts.append(prompts)
        else:
            if targets.shape[0] != prompts.shape[0]:
                raise ValueError(f"sample {b}: the answer holds {prompts.shape[0]} [SEG] but "
                                 f"{targets.shape[0]} phrase mask tracks were given")
            row_prompts += [p.expand(num_query, -1) for p in prompts]
        rows += [b] * targets.shape[0]
        row_targets += list(targets)
    zero = out.logits.sum() * 0.0  # keeps the graph when the batch has no masks
    losses = {"ce": ce, "bce": zero, "dice": zero, "visibility": zero}
    if rows:
        sam_feats = model.encode_sam_frames(batch["query_sam"].to(device).flatten(0, 1))
        prompt_rows = torch.stack(row_prompts)                         # (R, Nq, prompt_dim)
        memory = model.new_memory_bank()
        mask_logits, object_scores = [], []
        for q in range(num_query):
            index = torch.tensor(rows, device=device) * num_query + q
            pred = model.track_step(sam_feats.select(index), prompt_rows[:, q], memory)
            mask_logits.append(pred.logits[:, 0])
            object_scores.append(pred.object_score[:, 0])
        logits = torch.stack(mask_logits, dim=1)                        # (R, Nq, S, S)
        targets = torch.stack(row_targets).to(device).float()
        losses["bce"] = mask_bce(logits.flatten(0, 1), targets.flatten(0, 1))
        losses["dice"] = mask_dice(logits.flatten(0, 1), targets.flatten(0, 1))
        visible = (targets.flatten(2).amax(dim=2) > 0).float()
        losses["visibility"] = F.binary_cross_entropy_with_logits(torch.stack(object_scores, dim=1).float(), visible)
        losses["mask_logits"] = logits.detach()
    losses["total"] = (w.ce * ce + w.bce * losses["bce"] + w.dice * losses["dice"]
                       + visibility_weight * losses["visibility"])
    return losses
