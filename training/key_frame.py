"""Training the key-frame selector on the trained model's own IoU (GLUS Sec. 4.4, B.4).

Pseudo-labels: the trained model segments each training expression; the IoU of its mask with the
ground truth on each frame says how well that frame is grounded (frames where the object is absent
get 0: a key frame must show the object). The selector learns to predict these IoUs from visual
tokens and the expression alone, so at inference it can pick the start frame before segmenting.
The rest of the model stays frozen in this stage.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from glus_ros.inference import VideoSegmenter
from glus_ros.model.config import KeyFrameConfig
from glus_ros.model.glus import GLUSModel
from glus_ros.model.transforms import clip_input, to_tensor

log = logging.getLogger(__name__)


@dataclass
class KeyFrameExample:
    video: str
    expression: str
    ious: np.ndarray   # (T,) pseudo-label per frame


def frame_ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(T, H, W) bool masks -> (T,) IoU; 0 where the ground truth is empty."""
    inter = np.logical_and(pred, gt).reshape(len(gt), -1).sum(axis=1)
    union = np.logical_or(pred, gt).reshape(len(gt), -1).sum(axis=1)
    present = gt.reshape(len(gt), -1).any(axis=1)
    return np.where(present, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def pseudo_labels(model: GLUSModel, reader, max_expressions: int | None = None, seed: int = 0,
                  progress: bool = True) -> list[KeyFrameExample]:
    """Per-frame IoU of the model's own masks for (a seeded sample of) the reader's expressions."""
    expressions = list(reader.expressions())
    if max_expressions is not None and max_expressions < len(expressions):
        expressions = random.Random(f"keyframe:{seed}").sample(expressions, max_expressions)
        expressions.sort(key=lambda e: (e.video, e.exp_id))
    segmenter = VideoSegmenter(model)
    examples, frames, cached = [], [], None
    for e in tqdm(expressions, desc="key-frame labels", unit="expr", disable=not progress):
        if cached != e.video:
            frames = [reader.load_frame(e.video, f) for f in reader.frames(e.video)]
            cached = e.video
        masks = segmenter.segment(frames, e.text).masks
        examples.append(KeyFrameExample(e.video, e.text, frame_ious(masks, reader.gt_masks(e) > 0)))
    return examples


def train_selector(model: GLUSModel, reader, examples: list[KeyFrameExample], epochs: int = 5, lr: float = 1e-3,
                   cfg: KeyFrameConfig | None = None, seed: int = 0, progress: bool = True) -> list[float]:
    """Attach a fresh selector and fit it to the pseudo-labels; returns the mean loss of each epoch."""
    if not examples:
        raise ValueError("no key-frame examples to train on")
    torch.manual_seed(seed)
    selector = model.add_key_frame_selector(cfg)
    model.eval()
    size = model.cfg.vlm.image_size
    embeds: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for video in dict.fromkeys(e.video for e in examples):
            pixels = to_tensor([reader.load_frame(video, f) for f in reader.frames(video)]).to(model.device)
            embeds[video] = model.encode_clip_frames(clip_input(pixels, size))
    optim = torch.optim.Adam(selector.parameters(), lr=lr)
    order = list(range(len(examples)))
    rng = random.Random(f"keyframe-train:{seed}")
    history = []
    selector.train()
    for _ in tqdm(range(epochs), desc="key-frame selector", unit="epoch", disable=not progress):
        rng.shuffle(order)
        total = 0.0
        for i in order:
            ex = examples[i]
            logits = model.key_frame_logits(embeds[ex.video], ex.expression)
            target = torch.from_numpy(ex.ious).to(logits.device)
            loss = F.binary_cross_entropy_with_logits(logits, target)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += float(loss.detach())
        history.append(total / len(order))
    selector.eval()
    return history


def selection_quality(model: GLUSModel, reader, examples: list[KeyFrameExample]) -> dict[str, float]:
    """How good the chosen frames are: mean pseudo-IoU at the selector's pick vs frame 0 vs the best frame."""
    segmenter = VideoSegmenter(model)
    picked, first, best = [], [], []
    for ex in examples:
        frames = [reader.load_frame(ex.video, f) for f in reader.frames(ex.video)]
        scores = segmenter.key_frame_scores(frames, ex.expression)
        picked.append(float(ex.ious[int(np.argmax(scores))]))
        first.append(float(ex.ious[0]))
        best.append(float(ex.ious.max()))
    return {"picked_iou": float(np.mean(picked)), "first_frame_iou": float(np.mean(first)),
            "oracle_iou": float(np.mean(best))}
