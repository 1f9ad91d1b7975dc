"""The end-to-end training step: real tiny model, real synthetic clips, the loss goes down."""

import torch

from glus_ros.model.glus import GLUSModel
from glus_ros.training.losses import SegTokenBank
from glus_ros.training.step import forward_clips

from helpers_model import synthetic_batch


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
