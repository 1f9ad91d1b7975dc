"""The point head (a set of points per [SEG]), its decoding, its config, and its one-to-one set loss."""

import math

import numpy as np
import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.model.config import config_from_dict, load_config
from glus_ros.model.point_head import PointHead, decode_points
from glus_ros.model.transforms import clip_input, to_tensor
from glus_ros.training.point_losses import point_set_loss, point_targets_from_union

from helpers_model import moving_disk_clip, tiny_model


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _raw(slots: list[tuple[float, float, float]]) -> torch.Tensor:
    """(1, 1, K, 3) raw slots from (x, y, presence probability)."""
    rows = [[_logit(x), _logit(y), _logit(p)] for x, y, p in slots]
    return torch.tensor([[rows]], dtype=torch.float32, requires_grad=True)


# --- decoding ----------------------------------------------------------------------------------
def test_decode_keeps_present_slots_surest_first_and_drops_broken_ones():
    raw = _raw([(0.2, 0.3, 0.9), (0.5, 0.5, 0.1), (0.7, 0.8, 0.99), (0.4, 0.4, 0.6)]).detach().clone()
    raw[0, 0, 3, 0] = float("nan")                          # a diverged slot: dropped, not a crash
    raw = torch.cat([raw, torch.full_like(raw, float("inf"))], dim=1)   # a second query frame of infs
    points = decode_points(raw)
    assert len(points) == 1 and len(points[0]) == 2
    assert np.allclose(points[0][0], [(0.7, 0.8), (0.2, 0.3)], atol=1e-6)
    assert points[0][1] == []
    assert len(decode_points(raw, threshold=0.95)[0][0]) == 1
    huge = torch.tensor([[[[1e6, -1e6, 10.0]]]])
    assert decode_points(huge) == [[[(1.0, 0.0)]]]          # saturated coordinates stay in [0, 1]


def test_decode_errors():
    with pytest.raises(ValueError, match=r"\(B, Nq, K, 3\)"):
        decode_points(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="threshold"):
        decode_points(torch.zeros(1, 1, 2, 3), threshold=1.0)
    with pytest.raises(ValueError, match="max_points"):
        PointHead(8, 0)
    with pytest.raises(ValueError, match=r"\(B, Nq, hidden\)"):
        PointHead(8, 2)(torch.zeros(8))


def test_fresh_head_starts_with_distinct_absent_slots():
    raw = PointHead(16, 8)(torch.zeros(1, 1, 16))
    assert raw.shape == (1, 1, 8, 3)
    assert decode_points(raw) == [[[]]]                      # nothing is pointed at before training
    coords = torch.sigmoid(raw[0, 0, :, :2])
    assert torch.cdist(coords, coords).add(torch.eye(8)).min() > 0.1


# --- config and model ---------------------------------------------------------------------------
def test_points_config_and_model_head(tmp_path):
    raw = load_config("tiny").to_dict()
    assert raw["points"] is None and tiny_model().point_head is None
    cfg = config_from_dict({**raw, "points": {}})
    assert cfg.points.max_points == 8 and cfg.points.threshold == 0.5
    for bad in ({"max_points": 0}, {"threshold": 1.5}, {"bogus": 1}):
        with pytest.raises(ValueError, match=r"points|bogus"):
            config_from_dict({**raw, "points": bad})
    model = load_model("tiny", overrides={"points": {"max_points": 3}})
    assert set(model.parameter_groups()["points"]) == set(model.point_head.parameters())
    pixels = clip_input(to_tensor(moving_disk_clip(8)), model.cfg.vlm.image_size)
    with torch.no_grad():
        embeds = model.encode_clip_frames(pixels)
        out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
        raw_points = model.points_from_seg(out.seg_hidden)
    assert raw_points.shape == (1, 4, 3, 3)
    # saved with the model, loaded back with the same weights
    loaded = load_model(save_model_dir(model, tmp_path / "m"))
    assert loaded.cfg.points.max_points == 3
    assert torch.equal(loaded.point_head.mlp[0].weight, model.point_head.mlp[0].weight)
    with pytest.raises(ValueError, match="no point head"):
        tiny_model().points_from_seg(out.seg_hidden)
    plain = load_model("tiny")
    head = plain.add_point_head()
    assert plain.cfg.points.max_points == 8 and plain.point_head is head


# --- the set loss -------------------------------------------------------------------------------
def test_perfect_prediction_has_no_coordinate_loss():
    raw = _raw([(0.2, 0.3, 0.9999), (0.6, 0.7, 0.9999), (0.5, 0.5, 0.0001)])
    losses = point_set_loss(raw, [[[(0.6, 0.7), (0.2, 0.3)]]])
    assert float(losses["points_coord"].detach()) < 1e-5
    assert float(losses["points_presence"].detach()) < 1e-3


def test_loss_is_invariant_to_slot_and_target_order():
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 5, 3)
    targets = [[[(0.1, 0.2), (0.8, 0.3)], [], [(0.5, 0.5)]], [[(0.3, 0.3)], [(0.9, 0.1), (0.2, 0.7), (0.4, 0.4)], []]]
    base = point_set_loss(raw, targets)["points"]
    perm = torch.randperm(5)
    assert torch.allclose(point_set_loss(raw[:, :, perm], targets)["points"], base)
    reversed_targets = [[list(reversed(frame)) for frame in sample] for sample in targets]
    assert torch.allclose(point_set_loss(raw, reversed_targets)["points"], base)


def test_empty_targets_push_every_presence_down():
    raw = torch.randn(1, 2, 4, 3, requires_grad=True)
    losses = point_set_loss(raw, [[[], []]])
    assert float(losses["points_coord"].detach()) == 0.0
    losses["points"].backward()
    assert bool((raw.grad[..., 2] > 0).all())         # gradient descent lowers every presence logit
    assert bool((raw.grad[..., :2] == 0).all())


def test_matching_takes_the_nearest_slot():
    raw = _raw([(0.1, 0.1, 0.5), (0.9, 0.9, 0.5)])
    point_set_loss(raw, [[[(0.85, 0.9)]]])["points"].backward()
    assert raw.grad[0, 0, 1, 2] < 0 < raw.grad[0, 0, 0, 2]   # slot 1 raised, slot 0 lowered
    assert raw.grad[0, 0, 0, :2].abs().sum() == 0            # the unmatched slot's position is free
    # more points than slots: the slots all match, nothing breaks
    many = point_set_loss(_raw([(0.1, 0.1, 0.5)]), [[[(0.1, 0.1), (0.9, 0.9), (0.5, 0.5)]]])
    assert torch.isfinite(many["points"])


def test_loss_input_errors():
    raw = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="1 samples x 2 query frames"):
        point_set_loss(raw, [[[]]])
    with pytest.raises(ValueError, match="not a normalised"):
        point_set_loss(raw, [[[(1.2, 0.1)], []]])
    with pytest.raises(ValueError, match=r"\(B, Nq, K, 3\)"):
        point_set_loss(torch.zeros(1, 2, 3), [[[], []]])


def test_targets_from_union_masks_and_end_to_end_gradient():
    masks = torch.zeros(1, 2, 32, 32)
    masks[0, 0, 2:10, 2:10] = 1
    masks[0, 0, 20:30, 18:30] = 1
    targets = point_targets_from_union(masks)
    assert [len(t) for t in targets[0]] == [2, 0]
    for x, y in targets[0][0]:
        assert masks[0, 0, int(y * 32), int(x * 32)] == 1
    with pytest.raises(ValueError, match=r"\(B, Nq, H, W\)"):
        point_targets_from_union(masks[0])
    model = load_model("tiny", overrides={"points": {}}).train()
    pixels = clip_input(to_tensor(moving_disk_clip(8)), model.cfg.vlm.image_size)
    embeds = model.encode_clip_frames(pixels)
    out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
    point_set_loss(model.points_from_seg(out.seg_hidden), [[[(0.2, 0.5)], [], [(0.3, 0.5)], [(0.1, 0.1)]]]
                   )["points"].backward()
    assert model.point_head.mlp[0].weight.grad is not None
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.vlm.language_model.parameters())


def test_presence_in_the_matching_cost_keeps_a_confident_slot_matched():
    import torch

    from glus_ros.training.point_losses import point_set_loss

    logit = lambda p: float(torch.logit(torch.tensor(p)))  # noqa: E731
    raw = torch.zeros(1, 1, 2, 3)
    raw[0, 0, 0] = torch.tensor([logit(0.50), logit(0.50), logit(0.05)])   # on the point, unsure
    raw[0, 0, 1] = torch.tensor([logit(0.60), logit(0.50), logit(0.95)])   # 0.1 away, confident
    gt = [[[(0.5, 0.5)]]]
    by_distance = point_set_loss(raw, gt)
    by_presence = point_set_loss(raw, gt, match_presence=1.0)
    assert float(by_distance["points_coord"]) < 1e-5                   # slot 0 matched
    assert abs(float(by_presence["points_coord"]) - 0.1) < 1e-4       # slot 1 matched
    assert float(by_presence["points_presence"]) < float(by_distance["points_presence"])
    weighted = point_set_loss(raw, gt, match_presence=1.0, presence_pos_weight=7.0)
    assert float(weighted["points_presence"]) > float(by_presence["points_presence"])
