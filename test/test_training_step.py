"""The end-to-end training step: real tiny model, real synthetic clips, the loss goes down."""

import numpy as np
import torch

from glus_ros.data.synth import generate_video
from glus_ros.model.glus import GLUSModel
from glus_ros.model.transforms import clip_input, sam_input, to_tensor
from glus_ros.training.losses import SegTokenBank
from glus_ros.training.step import forward_clips


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


def test_overfitting_one_batch_lowers_every_supervised_loss():
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny").train()
    batch = synthetic_batch(model)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    bank = SegTokenBank(32)
    history = []
    for _ in range(25):
        losses = forward_clips(model, batch, seg_bank=bank)
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append({k: float(v.detach()) for k, v in losses.items() if v.ndim == 0})
    first, last = history[0], history[-1]
    assert last["total"] < 0.5 * first["total"]
    assert last["ce"] < first["ce"] and last["dice"] < first["dice"] and last["bce"] < first["bce"]
    assert len(bank) == 32  # 50 embeddings went in; the bank stays bounded
