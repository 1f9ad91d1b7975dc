"""Shared builders for tests that need the real tiny model (random init, CPU)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from glus_ros.data.synth import generate_video
from glus_ros.model.glus import GLUSModel
from glus_ros.model.transforms import clip_input, sam_input, to_tensor


@functools.lru_cache(maxsize=1)
def _cached_tiny() -> GLUSModel:
    torch.manual_seed(0)
    return GLUSModel.from_config("tiny").eval()


def tiny_model() -> GLUSModel:
    """The tiny model with fixed random weights (shared; tests must not modify it)."""
    return _cached_tiny()


def moving_disk_clip(num_frames: int = 10, height: int = 72, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """A red disk moving right over noise: a clip whose content every test can predict."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(num_frames):
        frame = (rng.random((height, width, 3)) * 60).astype(np.uint8)
        cx, cy = 15 + 5 * t, height // 2
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= 100] = (230, 30, 30)
        frames.append(frame)
    return frames


def synthetic_batch(model: GLUSModel) -> dict:
    """Two clips: 4 context frames spread over the video, the first 4 frames as queries."""
    ctx, qry, qsam, masks, exprs, keys = [], [], [], [], [], []
    for seed in (1, 2):
        video = generate_video(seed, 0)
        expr = video.expressions[0]
        union = np.any([video.object_masks[o] for o in expr.obj_ids], axis=0)
        ctx.append(clip_input(to_tensor([video.frames[i] for i in (1, 5, 9, 13)]), model.cfg.vlm.image_size))
        q = to_tensor(video.frames[:4])
        qry.append(clip_input(q, model.cfg.vlm.image_size))
        qsam.append(sam_input(q, model.sam.image_size))
        m = torch.from_numpy(union[:4]).float()[:, None]
        masks.append(torch.nn.functional.interpolate(m, size=(model.sam.image_size,) * 2, mode="nearest")[:, 0])
        exprs.append(expr.text)
        keys.append(seed)
    return {"context_clip": torch.stack(ctx), "query_clip": torch.stack(qry), "query_sam": torch.stack(qsam),
            "query_masks": torch.stack(masks), "expressions": exprs, "object_keys": torch.tensor(keys)}


class MethodSpy:
    """Wraps one method of a model instance while the ``with`` block runs; subclasses say what to observe.

    The instance attribute shadows the class method; leaving the block deletes it, so the real method is back.
    """

    def __init__(self, model: GLUSModel, name: str) -> None:
        self.model, self.name = model, name
        self.original = getattr(model, name)

    def __call__(self, *args, **kwargs):
        return self.original(*args, **kwargs)

    def __enter__(self):
        setattr(self.model, self.name, self)
        return self

    def __exit__(self, *exc: object) -> None:
        delattr(self.model, self.name)


def assert_mask_points(out) -> None:
    """A TargetOutput without point-head points: one point per mask component (largest first), the first
    of them its point_2d; a mask of specks only still has its interior point."""
    from glus_ros.geometry import component_points

    assert out.points == (component_points(out.mask) or ([out.point_2d] if out.point_2d is not None else []))
    assert out.point_2d == (out.points[0] if out.points else None)
