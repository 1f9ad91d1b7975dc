"""GLUS training losses: text CE, mask BCE + DICE, and the object contrastive loss with its [SEG] bank.

Everything here is a pure torch function of its inputs (the bank is the only state, and it holds
detached tensors), so each term can be tested on hand-made numbers and reused by any training loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

# Object-set ids come either as a (B,) integer tensor of opaque set ids or as one frozenset of object ids
# per expression; two expressions refer to "the same object" exactly when their ids are equal.
ObjectIds = torch.Tensor | Sequence[frozenset[int]]


@dataclass(frozen=True)
class LossWeights:
    """Term weights of the GLUS objective (paper Table A) and the contrastive temperature (Sec. 4.3)."""

    ce: float = 1.0
    dice: float = 0.5
    bce: float = 2.0
    contrastive: float = 0.1
    temperature: float = 0.07

    def __post_init__(self) -> None:
        for name in ("ce", "dice", "bce", "contrastive"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"loss weight {name}={value!r} must be >= 0")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0")


class ContrastiveResult(NamedTuple):
    """The contrastive loss plus how many anchors had a positive (0 means the loss is a graph-keeping zero)."""

    loss: torch.Tensor
    num_anchors: int


def _zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that still depends on ``t``: backward() and DDP see every parameter even when a term is empty."""
    return t.sum() * 0.0


def text_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE with labels aligned to input ids (HF convention): position t predicts label t+1.

    Labels equal to -100 are not supervised; the mean runs over supervised tokens only. With none
    supervised the result is a zero that keeps the graph, so a batch without answers does not crash.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, L, V), got shape {tuple(logits.shape)}")
    if labels.dim() != 2 or labels.shape != logits.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits (B, L) = {tuple(logits.shape[:2])}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer token ids, got dtype {labels.dtype}")
    vocab = logits.shape[-1]
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        raise ValueError(f"label {int(labels[bad][0])} is outside the vocabulary [0, {vocab}) and is not -100")
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    if int((shift_labels != IGNORE_INDEX).sum()) == 0:
        return _zero_like_graph(logits)
    return F.cross_entropy(
        shift_logits.reshape(-1, vocab).float(), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="mean"
    )


def _check_masks(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Validate (N, H, W) logits/targets and return the boolean (N,) selection of masks to score."""
    if logits.dim() != 3:
        raise ValueError(f"mask logits must be (N, H, W), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(f"mask targets shape {tuple(targets.shape)} != mask logits shape {tuple(logits.shape)}")
    if targets.numel() and (float(targets.min()) < 0.0 or float(targets.max()) > 1.0):
        raise ValueError(f"mask targets must lie in [0, 1], got range [{float(targets.min())}, {float(targets.max())}]")
    if valid is None:
        return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    if valid.shape != (logits.shape[0],):
        raise ValueError(f"valid shape {tuple(valid.shape)} must be (N,) = ({logits.shape[0]},)")
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
    return valid.to(logits.device)


def mask_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel BCE-with-logits, averaged per mask, then over the valid masks (LISA's normalisation).

    Averaging per mask first keeps large and small frames equally weighted; ``valid`` drops frames that
    carry no annotation instead of training them towards an empty mask.
    """
    keep = _check_masks(logits, targets, valid)
    if not bool(keep.any()):
        return _zero_like_graph(logits)
    x = logits[keep].float()
    t = targets[keep].to(x.dtype)
    per_mask = F.binary_cross_entropy_with_logits(x, t, reduction="none").flatten(1).mean(dim=1)
    return per_mask.mean()


def mask_dice(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1.0
) -> torch.Tensor:
    """Soft DICE ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` per mask, mean over valid masks.

    The smoothing ``eps=1.0`` (as in the LISA/GLUS code lineage, rather than a tiny epsilon) makes an
    empty target predicted as empty cost ~0 instead of 0/0, and softens gradients on tiny objects.
    """
    if not eps > 0.0:
        raise ValueError(f"eps={eps!r} must be > 0")
    keep = _check_masks(logits, targets, valid)
    if not bool(keep.any()):
        return _zero_like_graph(logits)
    p = torch.sigmoid(logits[keep].float()).flatten(1)
    t = targets[keep].float().flatten(1)
    per_mask = 1.0 - (2.0 * (p * t).sum(dim=1) + eps) / (p.sum(dim=1) + t.sum(dim=1) + eps)
    return per_mask.mean()


def _id_keys(ids: ObjectIds, what: str) -> list[Hashable]:
    """Turn either id form into comparable keys; ``None`` marks "no object" (int id < 0 or empty set)."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{what} must be a 1-D integer tensor, got shape {tuple(ids.shape)} dtype {ids.dtype}")
        return [("id", v) if v >= 0 else None for v in ids.tolist()]
    keys: list[Hashable] = []
    for s in ids:
        if not isinstance(s, frozenset):
            raise ValueError(f"{what} entries must be frozenset[int], got {s!r}")
        keys.append(("set", s) if s else None)
    return keys


def _same_kind(a: list[Hashable], b: list[Hashable]) -> None:
    """Refuse to compare tensor ids with frozensets: equal-looking values would mean different things."""
    kinds = {k[0] for k in (*a, *b) if k is not None}
    if len(kinds) > 1:
        raise ValueError(f"object ids mix kinds {sorted(kinds)}: use tensors or frozensets for both batch and bank")


def object_contrastive(
    anchors: torch.Tensor,
    object_ids: ObjectIds,
    bank: torch.Tensor | None = None,
    bank_ids: ObjectIds | None = None,
    temperature: float = 0.07,
) -> ContrastiveResult:
    """SimCLR-style InfoNCE on L2-normalised [SEG] embeddings (GLUS Sec. 4.3).

    For anchor i, positives P_i are the other batch anchors and the bank entries with the same object-set
    id; negatives N_i are those with a different id. Its loss is the mean over p in P_i of
    ``-log(exp(s_ip/T) / (exp(s_ip/T) + sum_n exp(s_in/T)))``, and the result is the mean over anchors that
    have a positive. Ids < 0 or empty sets mean "no object" and take no part. With no positive anywhere
    the loss is a graph-keeping zero, because the paper applies the term only when a positive exists.
    Ids must be unique across the data set (not per video), since the bank mixes batches.
    """
    if anchors.dim() != 2:
        raise ValueError(f"anchors must be (B, D), got shape {tuple(anchors.shape)}")
    if not temperature > 0.0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    keys = _id_keys(object_ids, "object_ids")
    if len(keys) != anchors.shape[0]:
        raise ValueError(f"{len(keys)} object ids for {anchors.shape[0]} anchors")
    bank_keys: list[Hashable] = []
    if (bank is None) != (bank_ids is None):
        raise ValueError("bank and bank_ids must be given together")
    if bank is not None and bank_ids is not None:
        if bank.dim() != 2 or bank.shape[1] != anchors.shape[1]:
            raise ValueError(f"bank shape {tuple(bank.shape)} must be (M, {anchors.shape[1]})")
        bank_keys = _id_keys(bank_ids, "bank_ids")
        if len(bank_keys) != bank.shape[0]:
            raise ValueError(f"{len(bank_keys)} bank ids for {bank.shape[0]} bank entries")
        _same_kind(keys, bank_keys)

    b = anchors.shape[0]
    # Dense integer labels for all keys; -1 = no object.
    index: dict[Hashable, int] = {}
    labels = [-1 if k is None else index.setdefault(k, len(index)) for k in (*keys, *bank_keys)]
    lab = torch.tensor(labels, dtype=torch.long, device=anchors.device)

    z = F.normalize(anchors.float(), dim=1)
    others = z
    if bank_keys:
        others = torch.cat([z, F.normalize(bank.to(z.device).float().detach(), dim=1)], dim=0)  # type: ignore[union-attr]
    logits = z @ others.T / temperature  # (B, B + M)

    real = (lab[:b, None] >= 0) & (lab[None, :] >= 0)
    not_self = torch.ones_like(real)
    not_self[:, :b] = ~torch.eye(b, dtype=torch.bool, device=anchors.device)
    same = lab[:b, None] == lab[None, :]
    pos = real & not_self & same
    neg = real & ~same

    has_pos = pos.any(dim=1)
    num = int(has_pos.sum())
    if num == 0:
        return ContrastiveResult(_zero_like_graph(anchors), 0)

    # -log(e^a / (e^a + sum_n e^n)) = softplus(logsumexp_n(n) - a); rows without negatives give softplus(-inf)=0.
    neg_logits = logits.masked_fill(~neg, float("-inf"))
    has_neg = neg.any(dim=1)
    lse_neg = torch.logsumexp(neg_logits.masked_fill(~has_neg[:, None], 0.0), dim=1)
    lse_neg = lse_neg.masked_fill(~has_neg, float("-inf"))
    pair_loss = F.softplus(lse_neg[:, None] - logits)  # (B, B + M), meaningful where pos
    pair_loss = torch.where(pos, pair_loss, torch.zeros_like(pair_loss))
    per_anchor = pair_loss.sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return ContrastiveResult(per_anchor[has_pos].sum() / num, num)


class SegTokenBank:
    """Bounded FIFO of detached [SEG] embeddings and their object-set ids: the contrastive negatives.

    Detached so old steps' graphs are freed, bounded so memory stays constant over a long run; the
    oldest entries leave first. Add the current batch after computing its loss, so an anchor never
    meets its own copy in the bank.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r} must be >= 1")
        self.capacity = capacity
        self._emb: deque[torch.Tensor] = deque(maxlen=capacity)
        self._ids: deque[Hashable] = deque(maxlen=capacity)
        self._kind: str | None = None
        self._dim: int | None = None

    def __len__(self) -> int:
        return len(self._emb)

    def add(self, embeddings: torch.Tensor, ids: ObjectIds) -> None:
        """Append (B, D) embeddings with their ids; entries with "no object" ids are skipped."""
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
        if self._dim is not None and embeddings.shape[1] != self._dim:
            raise ValueError(f"embedding dim {embeddings.shape[1]} != bank dim {self._dim}")
        keys = _id_keys(ids, "ids")
        if len(keys) != embeddings.shape[0]:
            raise ValueError(f"{len(keys)} ids for {embeddings.shape[0]} embeddings")
        kinds = {k[0] for k in keys if k is not None}
        if self._kind is not None:
            kinds.add(self._kind)
        if len(kinds) > 1:
            raise ValueError(f"bank ids mix kinds {sorted(kinds)}")
        self._dim = embeddings.shape[1]
        if kinds:
            self._kind = kinds.pop()
        rows = embeddings.detach().float()
        for row, key in zip(rows, keys, strict=True):
            if key is None:
                continue
            self._emb.append(row.clone())  # clone: a view would pin the whole batch tensor in memory
            self._ids.append(key)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue a run with the same negatives (saved in training checkpoints)."""
        return {"capacity": self.capacity, "emb": [e.clone() for e in self._emb], "ids": list(self._ids),
                "kind": self._kind, "dim": self._dim}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Restore a saved bank; ``device``: where training runs (checkpoints are read onto the CPU)."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"bank capacity {state['capacity']} in the checkpoint, {self.capacity} configured")
        emb = state["emb"] if device is None else [e.to(device) for e in state["emb"]]
        self._emb = deque(emb, maxlen=self.capacity)
        self._ids = deque(state["ids"], maxlen=self.capacity)
        self._kind, self._dim = state["kind"], state["dim"]

    def tensors(self) -> tuple[torch.Tensor | None, ObjectIds | None]:
        """(bank (M, D), ids) in the form they were added: a long tensor or a list of frozensets; empty -> None."""
        if not self._emb:
            return None, None
        bank = torch.stack(list(self._emb))
        if self._kind == "id":
            return bank, torch.tensor([k[1] for k in self._ids], dtype=torch.long, device=bank.device)  # type: ignore[index]
        return bank, [k[1] for k in self._ids]  # type: ignore[index]


def glus_loss(
    text_logits: torch.Tensor,
    labels: torch.Tensor,
    mask_logits: torch.Tensor,
    mask_targets: torch.Tensor,
    mask_valid: torch.Tensor | None = None,
    seg_embeddings: torch.Tensor | None = None,
    object_ids: ObjectIds | None = None,
    bank: SegTokenBank | None = None,
    weights: LossWeights | None = None,
) -> dict[str, torch.Tensor]:
    """The full GLUS objective: ``ce*CE + bce*BCE + dice*DICE + contrastive*InfoNCE``.

    The contrastive term is added only when some anchor had a positive (paper Sec. 4.3); pass no
    ``seg_embeddings`` for data without multiple expressions per object (e.g. Ref-YouTube-VOS). The bank
    is only read: call ``bank.add(seg_embeddings, object_ids)`` after the step. ``contrastive_anchors``
    (a 0-d long tensor) counts the anchors that had a positive, for logging.
    """
    w = weights if weights is not None else LossWeights()
    ce = text_cross_entropy(text_logits, labels)
    bce = mask_bce(mask_logits, mask_targets, mask_valid)
    dice = mask_dice(mask_logits, mask_targets, mask_valid)
    total = w.ce * ce + w.bce * bce + w.dice * dice
    if (seg_embeddings is None) != (object_ids is None):
        raise ValueError("seg_embeddings and object_ids must be given together")
    if seg_embeddings is not None and object_ids is not None:
        bank_emb, bank_ids = bank.tensors() if bank is not None else (None, None)
        con = object_contrastive(seg_embeddings, object_ids, bank_emb, bank_ids, w.temperature)
        contrastive, num = con.loss, con.num_anchors
        if num > 0:
            total = total + w.contrastive * contrastive
    else:
        contrastive, num = _zero_like_graph(mask_logits), 0
    return {
        "ce": ce,
        "bce": bce,
        "dice": dice,
        "contrastive": contrastive,
        "contrastive_anchors": torch.tensor(num, dtype=torch.long),
        "total": total,
    }
