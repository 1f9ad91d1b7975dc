"""The visual position embedding: one distinct code per cell, added to every frame token, an option of the config."""

import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.model.config import load_config
from glus_ros.model.transforms import clip_input, to_tensor
from glus_ros.model.visual_position import VisualPositionEmbedding, grid_sincos

from helpers_model import moving_disk_clip


def test_grid_code_is_row_major_and_distinct_per_cell():
    side, hidden = 4, 32
    code = grid_sincos(side, hidden).view(side, side, hidden)
    rows, cols = code[..., : hidden // 2], code[..., hidden // 2:]
    # the row half depends on the row only, the column half on the column only
    assert torch.equal(rows, rows[:, :1].expand_as(rows))
    assert torch.equal(cols, cols[:1].expand_as(cols))
    assert not torch.equal(rows[0, 0], rows[1, 0]) and not torch.equal(cols[0, 0], cols[0, 1])
    flat = code.view(side * side, hidden)
    gaps = torch.cdist(flat, flat) + torch.eye(side * side) * 1e3
    assert float(gaps.min()) > 0.1   # every cell has its own code


@pytest.mark.parametrize("side, hidden, match", [(0, 32, "side"), (4, 30, "multiple of 4")])
def test_grid_code_rejects_bad_sizes(side, hidden, match):
    with pytest.raises(ValueError, match=match):
        grid_sincos(side, hidden)


def test_embedding_rejects_a_non_square_grid_and_wrong_tokens():
    with pytest.raises(ValueError, match="square token grid"):
        VisualPositionEmbedding(12, 32)
    module = VisualPositionEmbedding(16, 32)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 16, 32\)"):
        module(torch.zeros(2, 9, 32))
    tokens = torch.randn(3, 16, 32)
    assert torch.allclose(module(tokens) - tokens, module.table.detach().expand(3, 16, 32), atol=1e-6)


def _frame_tokens(model):
    pixels = clip_input(to_tensor(moving_disk_clip(3)), model.cfg.vlm.image_size)
    with torch.no_grad():
        return model.vlm.encode_frames(pixels)


def test_config_option_adds_the_cell_code_to_every_frame_token():
    plain = load_model("tiny").eval()
    placed = load_model("tiny", overrides={"vlm": {"visual_position": True}}).eval()
    assert plain.vlm.visual_position is None and load_config("tiny").vlm.visual_position is False
    assert placed.cfg.to_dict()["vlm"]["visual_position"] is True
    plain_state = plain.state_dict()
    for name, value in placed.state_dict().items():   # every other weight as without the option
        if not name.startswith("vlm.visual_position."):
            assert torch.equal(value, plain_state[name]), name
    table = placed.vlm.visual_position.table
    assert table.shape == (placed.cfg.vlm.tokens_per_frame, placed.vlm.hidden_size)
    assert torch.allclose(_frame_tokens(placed) - _frame_tokens(plain), table.detach().expand(3, *table.shape),
                          atol=1e-5)
    groups = placed.parameter_groups()
    assert any(p is table for p in groups["projections"])


def test_cell_code_trains_and_survives_a_save(tmp_path):
    model = load_model("tiny", overrides={"vlm": {"visual_position": True}}).train()
    model.apply_trainable(["projections"])
    pixels = clip_input(to_tensor(moving_disk_clip(2)), model.cfg.vlm.image_size)
    model.vlm.encode_frames(pixels)[:, 0].pow(2).mean().backward()   # a loss on the first cell only
    grad = model.vlm.visual_position.table.grad
    assert grad is not None and float(grad[0].abs().sum()) > 0 and float(grad[1:].abs().sum()) == 0
    with torch.no_grad():
        model.vlm.visual_position.table.mul_(3.0)
    save_model_dir(model, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert torch.equal(loaded.vlm.visual_position.table, model.vlm.visual_position.table)


def test_a_trained_model_without_the_code_gains_it(tmp_path):
    plain = load_model("tiny")
    save_model_dir(plain, tmp_path / "old")
    placed = load_model(str(tmp_path / "old"), overrides={"vlm": {"visual_position": True}})
    side = round(placed.cfg.vlm.tokens_per_frame**0.5)
    assert torch.equal(placed.vlm.visual_position.table, grid_sincos(side, placed.vlm.hidden_size))
