"""The official GLUS training step for the released weights (``loop.prompt_format: llava_v1``).

Facts of github GLUS-video/GLUS (commit 8fd138b: ``model/GLUS.py`` ``generate_masks`` / ``get_visual_embs``,
``model/llava/model/language_model/llava_llama.py``, ``utils/contrastive_loss.py``), re-expressed here:

- One LLM pass over every conversation of the batch (frames' visual tokens at the image placeholders). The [SEG]
  embedding of a query frame is ``text_hidden_fcs`` of the final-norm hidden state at the position *before* each
  [SEG] token (the state that predicts it), in conversation order.
- CE (weight 1.0) is taken only where the label is [SEG] (``specific_ce_loss``), averaged over those positions.
- SAM 2 runs without gradient up to the mask decoder: image encoder and memory attention under ``no_grad``, the
  memory written detached. The memory is per sample, cleared at each step, read with stride 1 (all earlier query
  frames, farthest first, ``maskmem_pos_enc`` only), and written from the memory-conditioned features and the
  mask logits resized to the SAM input size. The mask decoder (trainable) gets the [SEG] embedding as the whole
  sparse prompt.
- Mask losses on the low-res logits resized (bilinear) to the frame size: per mask, BCE averaged over pixels
  (weight 2.0) and DICE (scale 1000, eps 1e-6; weight 0.5), summed over masks and divided by their number.
- Object contrastive (weight 0.1, temperature 0.07, MeViS only): :class:`ReleaseSegBank`.
- Modules keep the training mode of the whole model (the memory attention's dropout is active, as officially).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glus_ros.core.frames import clip_pixels, encode_sam
from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.official_prompt import IMAGE_PLACEHOLDER
from glus_ros.model.prompting import IGNORE_INDEX
from glus_ros.model.tokenizer import SEG_TOKEN
from glus_ros.model.transforms import to_tensor
from glus_ros.training.losses import LossWeights
from glus_ros.training.release_batch import ReleaseBatch

DICE_SCALE = 1000.0
DICE_EPS = 1e-6
BANK_SIZE = 512
NUM_NEGATIVES = 128


def dice_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M, H, W) logits and targets -> (M,) the official DICE: probabilities and targets divided by 1000 before
    the sums (a float32 range choice of the official code, kept so the value is the same)."""
    probs = logits.sigmoid().flatten(1) / DICE_SCALE
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + (targets / DICE_SCALE).sum(-1)
    return 1 - (numerator + DICE_EPS) / (denominator + DICE_EPS)


def bce_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M, H, W) -> (M,) BCE averaged over each mask's pixels."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)


@dataclass
class BankEntry:
    dataset: str
    video: str
    exp_id: str
    frame: str
    token: torch.Tensor


class ReleaseSegBank:
    """The official object-contrastive term: a FIFO of the last 512 detached [SEG] embeddings keyed by (video,
    expression, frame). For a [SEG] of (v, e, f): positives are bank entries of other expressions of v with the
    same object set at frame f; negatives are entries of any other (video, expression). The current batch enters
    the bank before its loss is taken; an anchor without a positive or with fewer than 128 negatives has no loss.
    ``positives``: ``{(dataset, video): {exp_id: {exp_ids with the same objects}}}`` (MeViS-kind data only)."""

    def __init__(self, positives: dict[tuple[str, str], dict[str, set[str]]], capacity: int = BANK_SIZE,
                 temperature: float = 0.07) -> None:
        self.positives = positives
        self.entries: deque[BankEntry] = deque(maxlen=capacity)
        self.temperature = temperature

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, dataset: str, video: str, exp_id: str, frame: str, token: torch.Tensor) -> None:
        if dataset != "mevis":
            return
        self.entries.append(BankEntry(dataset, video, exp_id, frame, token.detach()))

    def loss(self, dataset: str, video: str, exp_id: str, frame: str, token: torch.Tensor,
             rng: random.Random) -> torch.Tensor | None:
        """-log softmax of the positive among it and 128 negatives (drawn with replacement) by cosine / T."""
        table = self.positives.get((dataset, video))
        if dataset != "mevis" or table is None:
            return None
        same = table.get(exp_id, set())
        positives = [e.token for e in self.entries if e.video == video and e.exp_id in same and e.frame == frame]
        negatives = [e.token for e in self.entries
                     if not (e.video == video and e.exp_id in same and e.frame == frame)
                     and (e.video != video or e.exp_id != exp_id)]
        if not positives or len(negatives) < NUM_NEGATIVES:
            return None
        picks = [rng.randint(0, len(negatives) - 1) for _ in range(NUM_NEGATIVES)]
        chosen = torch.stack([negatives[i] for i in picks])
        positive = rng.choice(positives)
        anchor = token[None]
        neg = torch.exp(F.cosine_similarity(chosen, anchor) / self.temperature).sum()
        pos = torch.exp(F.cosine_similarity(positive[None], anchor) / self.temperature)[0]
        return -torch.log(pos / (neg + pos))

    def state_dict(self) -> dict:
        return {"entries": [(e.dataset, e.video, e.exp_id, e.frame, e.token.cpu()) for e in self.entries]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.entries.clear()
        for dataset, video, exp_id, frame, token in state["entries"]:
            self.entries.append(BankEntry(dataset, video, exp_id, frame, token.to(device)))


def same_object_table(expressions: Iterable[tuple[str, str, tuple[int, ...]]]) -> dict[str, set[str]]:
    """{exp_id: other exp_ids of the video with the same (sorted) object ids} for (video, exp_id, obj_ids) rows of
    one video."""
    rows = [(exp_id, tuple(sorted(obj))) for _video, exp_id, obj in expressions]
    return {e: {o for o, objs in rows if objs == obj and o != e} for e, obj in rows}


def _conversation_embeds(model: GLUSModel, ids: torch.Tensor, frame_tokens: torch.Tensor, labels: torch.Tensor,
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One conversation: (embeds (L', D), expanded labels (L',), expanded ids (L',) with -1 at frame tokens)."""
    embed = model.vlm.language_model.embed_tokens
    slots = (ids == IMAGE_PLACEHOLDER).nonzero().flatten().tolist()
    if len(slots) != frame_tokens.shape[0]:
        raise ValueError(f"conversation has {len(slots)} image placeholders, the sample {frame_tokens.shape[0]} frames")
    parts, lab, exp_ids, start = [], [], [], 0
    per_frame = frame_tokens.shape[1]
    for slot, tokens in zip(slots, frame_tokens, strict=True):
        parts += [embed(ids[start:slot]), tokens.to(model.vlm.language_model.embed_tokens.weight.dtype)]
        lab += [labels[start:slot], labels.new_full((per_frame,), IGNORE_INDEX)]
        exp_ids += [ids[start:slot], ids.new_full((per_frame,), -1)]
        start = slot + 1
    parts.append(embed(ids[start:]))
    lab.append(labels[start:])
    exp_ids.append(ids[start:])
    return torch.cat(parts), torch.cat(lab), torch.cat(exp_ids)


def release_losses(model: GLUSModel, batch: ReleaseBatch, weights: LossWeights | None = None,
                   bank: ReleaseSegBank | None = None, rng: random.Random | None = None) -> dict[str, torch.Tensor]:
    """The official losses of one batch: ``ce``, ``bce``, ``dice`` (unweighted), ``contrastive`` when some anchor had
    one, ``total`` (weighted sum), and ``seg_embeddings`` (the [SEG] embeddings, detached, conversation order)."""
    w = weights if weights is not None else LossWeights()
    rng = rng if rng is not None else random.Random()
    device = model.device
    seg_id = int(model.tokenizer.convert_tokens_to_ids(SEG_TOKEN))
    lm = model.vlm.language_model
    tower_dtype = next(model.vlm.vision_tower.parameters()).dtype
    # 1. visual tokens of each sample's frames (vision tower frozen, projector trained)
    tokens = []
    for sample in batch.samples:
        with torch.no_grad():
            pixels = clip_pixels(model, list(sample.frames)).to(tower_dtype)
        tokens.append(model.encode_clip_frames(pixels))
    # 2. one LLM pass over all conversations, right-padded (pads embedded, as officially, and masked)
    rows, attention = [], []
    for s in range(len(batch.samples)):
        for c in range(batch.offsets[s], batch.offsets[s + 1]):
            ids_c = batch.input_ids[c].to(device)
            row = _conversation_embeds(model, ids_c, tokens[s], batch.labels[c].to(device))
            rows.append(row)
            added = row[0].shape[0] - ids_c.shape[0]
            attention.append(torch.cat([batch.attention_mask.new_ones(added), batch.attention_mask[c]]).to(device))
    embeds = torch.stack([r[0] for r in rows])
    labels = torch.stack([r[1] for r in rows])
    ids = torch.stack([r[2] for r in rows])
    attention_mask = torch.stack(attention)
    hidden = lm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    # 3. CE where the next label is [SEG]
    at_seg_label = labels[:, 1:] == seg_id
    logits = model.vlm.llava.lm_head(hidden[:, :-1][at_seg_label])
    ce = F.cross_entropy(logits.float(), labels[:, 1:][at_seg_label])
    # 4. the [SEG] embeddings: the states before each [SEG] token of the prompt
    before_seg = ids[:, 1:] == seg_id
    projection = model.seg_projection
    states = hidden[:, :-1][before_seg]
    seg = projection(states.to(next(projection.parameters()).dtype))
    counts = before_seg.sum(1).tolist()
    per_conversation = list(torch.split(seg, counts))
    # 5. SAM 2 per sample and query frame, memory without gradient, decoder with
    bce_sum = seg.new_zeros(())
    dice_sum = seg.new_zeros(())
    num_masks = 0
    sam = model.sam
    slots = int(model.cfg.memory.slots)
    for s, sample in enumerate(batch.samples):
        convs = per_conversation[batch.offsets[s]:batch.offsets[s + 1]]
        num_query = len(sample.query_frames)
        for c, emb in enumerate(convs):
            if emb.shape[0] != num_query:
                raise ValueError(f"conversation {c} of sample {s} has {emb.shape[0]} [SEG] tokens for "
                                 f"{num_query} query frames")
        masks = sample.masks.to(device)
        height, width = masks.shape[-2:]
        count = len(convs)
        memory = MemoryBank(slots, 1)
        query_pixels = to_tensor(list(sample.frames[len(sample.context_frames):])).to(device)
        with torch.no_grad():
            features = encode_sam(model, query_pixels)
        for j in range(num_query):
            frame = features.select(slice(j, j + 1)).expand(count)
            prompts = torch.stack([emb[j] for emb in convs])[:, None]
            with torch.no_grad():
                pix = sam.condition_on_memory(frame, memory)
            prediction = sam.decode(pix, frame, prompts.to(pix.dtype))
            with torch.no_grad():
                detached = type(prediction)(prediction.low_res_logits.detach(), prediction.logits.detach(),
                                            prediction.iou.detach(), prediction.object_score.detach())
                feats, pos = sam.encode_memory(frame, detached, pix)
                memory.add(feats, pos)
            frame_logits = F.interpolate(prediction.low_res_logits, size=(height, width), mode="bilinear",
                                         align_corners=False)[:, 0]
            target = masks[:, j].float()
            bce_sum = bce_sum + bce_per_mask(frame_logits, target).sum()
            dice_sum = dice_sum + dice_per_mask(frame_logits, target).sum()
            num_masks += count
    bce = bce_sum / (num_masks + 1e-8)
    dice = dice_sum / (num_masks + 1e-8)
    out = {"ce": ce, "bce": bce, "dice": dice}
    total = w.ce * ce + w.bce * bce + w.dice * dice
    # 6. object contrastive: the batch enters the bank, then each [SEG] takes its loss
    if bank is not None and w.contrastive > 0:
        keys = []
        for s, sample in enumerate(batch.samples):
            for c, emb in enumerate(per_conversation[batch.offsets[s]:batch.offsets[s + 1]]):
                exp_id = sample.str_ids[c].split("_", 2)[2]
                for j, name in enumerate(sample.frame_names):
                    keys.append((sample.dataset, sample.video, exp_id, name, emb[j]))
        for dataset, video, exp_id, name, token in keys:
            bank.add(dataset, video, exp_id, name, token)
        terms = [t for t in (bank.loss(*key, rng=rng) for key in keys) if t is not None]
        if len(terms) > 1:  # the official code drops a lone term
            out["contrastive"] = torch.stack(terms).mean()
            total = total + w.contrastive * out["contrastive"]
    out["total"] = total
    out["seg_embeddings"] = seg.detach()
    return out
