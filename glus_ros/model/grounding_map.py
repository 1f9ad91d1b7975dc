"""Grounding map: where in a query frame the [SEG] token points, as a dense prompt for SAM 2.

Not in GLUS, which passes [SEG] to SAM 2 as a sparse prompt only. A tiny LLM trained from scratch
learns *what* an expression names long before it learns to write *where* that object is into one
vector (measured: 38-84% of predicted masks sat on a look-alike; docs/training.md). The LLM's own
hidden states at a query frame's visual tokens already hold what it has read about each cell of that
frame (appearance, and motion from the context frames before it in the sequence); matching the [SEG]
state against them gives a coarse map of the referred object, which enters the SAM 2 mask decoder
through its mask-prompt path (``sam_prompt_encoder`` masks input) alongside the sparse prompt.

Matching alone cannot tell identical look-alikes apart: their tokens hold the same appearance, and
a small LLM trained from scratch does not learn to write "leftmost" into one of them (measured: the
map ranks the target above its look-alike at chance, docs/training.md). :class:`SpatialTerms` adds
what those words mean as geometry the [SEG] state only has to choose: a ramp over the frame ("on the
left": the matching cell furthest left wins) and nearness to an anchor the [SEG] state also matches
("next to the square", "far from the square"). With a :class:`MotionField` the terms also read how the
content of each cell moved over the context frames ("the circle that moves left"), which the LLM's 16
tokens per frame do not show.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glus_ros.model.motion_field import MotionField


def cell_centres(side: int) -> torch.Tensor:
    """(side * side, 2) row-major cell centres as (x, y) in [-1, 1]; y grows downwards like image rows."""
    if side < 1:
        raise ValueError(f"a grounding map needs a token grid side >= 1, got {side}")
    axis = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def grid_side(count: int) -> int:
    """The side of the square token grid of ``count`` tokens per frame."""
    side = round(count**0.5)
    if side * side != count:
        raise ValueError(f"a grounding map needs a square token grid per frame, got {count} tokens")
    return side


class SpatialTerms(nn.Module):
    """Position and relation words as map terms the [SEG] state and the expression's words parameterise.

    ``direction``: a ramp a*x + b*y over the cells (a < 0 favours the left). ``nearness``: each cell's
    expected distance to an anchor, the anchor being a softmax over the cells matched by a query; one
    anchor and a weight >= 0 for "near" (subtracted), one for "far" (added), so the anchor's pull towards
    the reference object does not depend on a learned sign. They read the [SEG] state and the prompt's
    word embeddings pooled by attention from it: a small LLM trained from scratch carries the colour word
    into [SEG] but hardly "left" against "right" (docs/training.md), while the word itself is in the
    embeddings. The ramp starts flat, and the near and far parts start equal (same anchor, same weight)
    so they cancel: a trained map gains the terms unchanged and learns them from there. Both inputs are
    layer-normalised and read through one hidden layer.
    """

    def __init__(self, hidden: int, dim: int, motion_dim: int = 0) -> None:
        super().__init__()
        self.word_query = nn.Linear(hidden, dim)
        self.word_key = nn.Linear(hidden, dim)
        # one hidden layer: "on the left" must slope the ramp and "moves left" must not (measured with a
        # linear read-out: position J&F 0.41 -> 0.54, motion 0.44 -> 0.32)
        self.mix = nn.Sequential(nn.Linear(2 * hidden, 2 * dim), nn.GELU())
        self.direction = nn.Linear(2 * dim, 2)
        self.anchor = nn.Linear(2 * dim, 2 * dim)   # one anchor query for "near", one for "far"
        self.nearness = nn.Linear(2 * dim, 2)
        nn.init.zeros_(self.direction.weight)
        nn.init.zeros_(self.direction.bias)
        nn.init.zeros_(self.nearness.weight)
        nn.init.zeros_(self.nearness.bias)
        with torch.no_grad():  # both anchors start equal and near = far, so the term is 0 until they learn apart
            self.anchor.weight[dim:] = self.anchor.weight[:dim]
            self.anchor.bias[dim:] = self.anchor.bias[:dim]
        # which motion the words ask for, matched against each cell's motion vector; starts at zero too
        self.motion: nn.Linear | None = nn.Linear(2 * dim, motion_dim) if motion_dim else None
        if self.motion is not None:
            nn.init.zeros_(self.motion.weight)
            nn.init.zeros_(self.motion.bias)

    def words(self, seg: torch.Tensor, embeds: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """seg (B, N, D), embeds (B, L, D) prompt input embeddings, text_mask (B, L) -> (B, N, D) pooled words."""
        if not bool(text_mask.any(dim=-1).all()):
            raise ValueError("spatial grounding terms need at least one word of the expression per sample")
        scores = torch.einsum("bnd,bld->bnl", self.word_query(seg), self.word_key(embeds))
        scores = scores.masked_fill(~text_mask[:, None, :], float("-inf")) / math.sqrt(self.word_key.out_features)
        return scores.softmax(dim=-1) @ embeds

    def condition(self, seg: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """seg, words (..., D) -> (..., 2 * dim): what the terms read, through their hidden layer."""
        # normalised inputs: the word embeddings are small (init std 0.02), so from zero weights at the
        # trainer's learning rate the terms would take thousands of steps to reach a useful size
        return self.mix(torch.cat([F.layer_norm(seg, seg.shape[-1:]), F.layer_norm(words, words.shape[-1:])], dim=-1))

    def anchor_logits(self, cond: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
        """cond (..., 2 * dim), keys (..., T, dim) -> (..., 2, T): the near and far anchors' logits over cells."""
        queries = self.anchor(cond).unflatten(-1, (2, -1))                    # (..., 2, dim)
        return torch.einsum("...ad,...td->...at", queries, keys) * scale

    def forward(self, seg: torch.Tensor, words: torch.Tensor, keys: torch.Tensor, scale: float,
                side: int, motion: torch.Tensor | None = None) -> torch.Tensor:
        """seg, words (..., D) float, keys (..., T, dim) the map's projected token states -> (..., T) logits.

        ``motion`` (..., T, motion_dim): each cell's motion vector (:class:`MotionField`); without it, or
        without a motion read-out, the motion term is left out."""
        cond = self.condition(seg, words)
        centres = cell_centres(side).to(seg.device)                            # (T, 2)
        ramp = self.direction(cond) @ centres.T                                # (..., T)
        weights = self.anchor_logits(cond, keys, scale).softmax(dim=-1)       # (..., 2, T) over cells
        expected = weights @ torch.cdist(centres, centres)                     # (..., 2, T): E[dist(cell, anchor)]
        near, far = F.softplus(self.nearness(cond)).unbind(-1)
        terms = ramp + far[..., None] * expected[..., 1, :] - near[..., None] * expected[..., 0, :]
        if self.motion is not None and motion is not None:
            terms = terms + torch.einsum("...m,...tm->...t", self.motion(cond), motion.float())
        return terms


class GroundingMap(nn.Module):
    """Scaled dot product between a projected [SEG] state and each projected visual-token state,
    plus the :class:`SpatialTerms` when ``spatial``."""

    def __init__(self, hidden: int, dim: int = 64, spatial: bool = False, motion_frames: int = 0,
                 motion_dim: int = 32) -> None:
        super().__init__()
        if motion_frames and not spatial:
            raise ValueError("the grounding map's motion field is read by its spatial terms: set spatial too")
        self.query = nn.Linear(hidden, dim)
        self.key = nn.Linear(hidden, dim)
        self.scale = 1.0 / math.sqrt(dim)
        self.spatial: SpatialTerms | None = None
        if spatial:  # made after the matching layers, which so initialise as without the terms
            self.spatial = SpatialTerms(hidden, dim, motion_dim if motion_frames else 0)
        self.motion: MotionField | None = MotionField(motion_frames, motion_dim) if motion_frames else None

    def forward(self, seg_hidden: torch.Tensor, frame_tokens: torch.Tensor,
                words: torch.Tensor | None = None, motion: torch.Tensor | None = None) -> torch.Tensor:
        """seg_hidden (..., D), frame_tokens (..., T, D) with T a square grid -> logits (..., G, G), row = y.

        ``words`` (..., D): the expression's pooled word embeddings (:meth:`SpatialTerms.words`), needed
        with the spatial terms. ``motion`` (..., T, motion_dim): the cells' motion vectors (``self.motion``
        of the context frames), read by the spatial terms' motion term."""
        side = grid_side(frame_tokens.shape[-2])
        seg = seg_hidden.float()
        keys = self.key(frame_tokens.float())
        logits = torch.einsum("...d,...td->...t", self.query(seg), keys) * self.scale
        if self.spatial is not None:
            if words is None:
                raise ValueError("a grounding map with spatial terms needs the expression's pooled words")
            logits = logits + self.spatial(seg, words.float(), keys, self.scale, side, motion)
        return logits.unflatten(-1, (side, side))

    def anchors(self, seg_hidden: torch.Tensor, frame_tokens: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """The spatial terms' near and far anchors, (..., D) / (..., T, D) / (..., D) -> logits (..., 2, G, G).

        Exposed so that training can tell the anchors where the reference object of "near the red circle"
        is (``aux.grounding_anchor``): left to the map's loss alone they did not find it (docs/training.md).
        """
        if self.spatial is None:
            raise ValueError("this grounding map has no spatial terms, hence no anchors")
        side = grid_side(frame_tokens.shape[-2])
        cond = self.spatial.condition(seg_hidden.float(), words.float())
        return self.spatial.anchor_logits(cond, self.key(frame_tokens.float()), self.scale).unflatten(-1, (side, side))


def mask_prompt(grid_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, G, G) map logits -> (B, 1, H, W) SAM 2 mask-prompt logits (bilinear, the prompt encoder's input size)."""
    return F.interpolate(grid_logits[:, None].float(), size=size, mode="bilinear", align_corners=False)


def grid_targets(masks: torch.Tensor, side: int) -> torch.Tensor:
    """(..., H, W) {0,1} masks -> (..., side, side) {0,1}: whether any pixel of the target falls in a cell."""
    lead = masks.shape[:-2]
    pooled = F.adaptive_max_pool2d(masks.float().reshape(-1, 1, *masks.shape[-2:]), side)
    return pooled.reshape(*lead, side, side)


def grounding_pick_loss(grid_logits: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the softmax over a map's cells against the target's cells (any of them may win),
    averaged over maps whose target is present; 0 when none is.

    grid_logits and cells (..., G, G), cells in {0, 1}. Unlike the per-cell BCE, whose gradient goes
    mostly to the many empty cells, every term here is the target against the rest, look-alikes included.
    """
    logits, cells = grid_logits.flatten(-2).float(), cells.flatten(-2).float()
    present = cells.amax(dim=-1) > 0
    if not bool(present.any()):
        return grid_logits.sum() * 0.0
    logits, cells = logits[present], cells[present]
    on_target = torch.logsumexp(logits.masked_fill(cells == 0, float("-inf")), dim=-1)
    return (torch.logsumexp(logits, dim=-1) - on_target).mean()
