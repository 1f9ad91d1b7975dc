"""Point head (VideoMolmo-style pointing): a set of points per [SEG] state instead of, or beside, the mask.

Molmo writes points as text; GLUS already condenses each query frame into one [SEG] hidden state, so
a small MLP reads that state and predicts ``max_points`` slots, each an (x, y) position normalised
to the frame and a presence logit. The slots are an unordered set (trained with one-to-one matching,
``glus_ros.training.point_losses``): the present slots are the points, their number is the count, and
zero present slots says the object is absent from the frame.

``locate="regress"`` writes each slot's position from the [SEG] state alone. ``locate="attend"`` lets
each slot attend over the query frame's visual-token states (the LLM's hidden states there, as the
grounding map reads them) and places it at the attention-weighted cell centre plus a bounded offset:
a tiny LLM trained from scratch knows *which* cells hold the object long before it can write their
coordinates into one vector (measured: regression stayed at 0.04 point accuracy).
"""

from __future__ import annotations

import math

import torch
from torch import nn

Point = tuple[float, float]


LOCATE_MODES = ("regress", "attend")


class PointHead(nn.Module):
    def __init__(self, hidden: int, max_points: int = 8, locate: str = "regress", dim: int = 64) -> None:
        super().__init__()
        if max_points < 1:
            raise ValueError(f"point head: max_points must be >= 1, got {max_points}")
        if locate not in LOCATE_MODES:
            raise ValueError(f"point head: locate must be one of {LOCATE_MODES}, got {locate!r}")
        self.max_points = max_points
        self.locate = locate
        if locate == "regress":
            self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, max_points * 3))
            self._init_slots()
        else:
            self.dim = dim
            self.slot_query = nn.Linear(hidden, max_points * dim)
            self.key = nn.Linear(hidden, dim)
            self.value = nn.Linear(hidden, dim)
            self.out = nn.Sequential(nn.GELU(), nn.Linear(dim, 3))  # offset x, y (tanh) and presence logit
            with torch.no_grad():
                self.out[-1].bias[2] = -2.0

    @torch.no_grad()
    def _init_slots(self) -> None:
        """Slots start spread over the frame and absent, so matching sees distinct candidates from step one."""
        bias = self.mlp[-1].bias.view(self.max_points, 3)
        side = math.ceil(math.sqrt(self.max_points))
        for k in range(self.max_points):
            x, y = ((k % side) + 0.5) / side, ((k // side) + 0.5) / side
            bias[k, 0] = math.log(x / (1 - x))
            bias[k, 1] = math.log(y / (1 - y))
            bias[k, 2] = -2.0  # prior presence ~0.12: most slots of most frames are empty

    def forward(self, seg_hidden: torch.Tensor, frame_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Nq, D) [+ (B, Nq, T, D) token states] -> (B, Nq, K, 3) raw: x and y logits (sigmoid -> [0, 1])
        and a presence logit."""
        if seg_hidden.dim() != 3:
            raise ValueError(f"point head expects (B, Nq, hidden) [SEG] states, got {tuple(seg_hidden.shape)}")
        if self.locate == "regress":
            out = self.mlp(seg_hidden)
            return out.view(*seg_hidden.shape[:2], self.max_points, 3)
        if frame_tokens is None or frame_tokens.dim() != 4 or frame_tokens.shape[:2] != seg_hidden.shape[:2]:
            got = None if frame_tokens is None else tuple(frame_tokens.shape)
            raise ValueError(f"an attending point head needs the query frames' token states (B, Nq, T, D), got {got}")
        tokens = frame_tokens.shape[2]
        side = round(tokens**0.5)
        if side * side != tokens:
            raise ValueError(f"an attending point head needs a square token grid per frame, got {tokens} tokens")
        q = self.slot_query(seg_hidden.float()).unflatten(-1, (self.max_points, self.dim))   # (B, Nq, K, d)
        k = self.key(frame_tokens.float())                                                   # (B, Nq, T, d)
        v = self.value(frame_tokens.float())
        attn = torch.softmax(torch.einsum("bqkd,bqtd->bqkt", q, k) / math.sqrt(self.dim), dim=-1)
        centres = _cell_centres(side, seg_hidden.device)                                     # (T, 2) x, y
        where = attn @ centres                                                               # (B, Nq, K, 2)
        out = self.out(attn @ v + q)
        xy = (where + torch.tanh(out[..., :2]) * (0.5 / side)).clamp(1e-4, 1 - 1e-4)
        return torch.cat([torch.logit(xy), out[..., 2:]], dim=-1)


def _cell_centres(side: int, device: torch.device) -> torch.Tensor:
    """(side*side, 2) normalised (x, y) centres of a row-major token grid."""
    c = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) / side
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def decode_points(raw: torch.Tensor, threshold: float = 0.5) -> list[list[list[Point]]]:
    """Raw slots (B, Nq, K, 3) -> per sample, per query frame, the (x, y) points in [0, 1].

    A slot is a point when sigmoid(presence) > threshold. Slots holding NaN or inf are dropped (a
    diverged head yields fewer points, never a crash); coordinates are clamped to [0, 1].
    Slots are returned by decreasing presence, so truncating a list keeps the surest points.
    """
    if raw.dim() != 4 or raw.shape[-1] != 3:
        raise ValueError(f"expected raw point slots (B, Nq, K, 3), got {tuple(raw.shape)}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"point threshold must be in (0, 1), got {threshold}")
    raw = raw.detach().float().cpu()
    finite = torch.isfinite(raw).all(dim=-1)
    presence = torch.sigmoid(raw[..., 2])
    keep = finite & (presence > threshold)
    coords = torch.sigmoid(raw[..., :2]).clamp(0.0, 1.0)
    out: list[list[list[Point]]] = []
    for b in range(raw.shape[0]):
        per_query: list[list[Point]] = []
        for q in range(raw.shape[1]):
            slots = [k for k in torch.argsort(presence[b, q], descending=True).tolist() if keep[b, q, k]]
            per_query.append([(float(coords[b, q, k, 0]), float(coords[b, q, k, 1])) for k in slots])
        out.append(per_query)
    return out
