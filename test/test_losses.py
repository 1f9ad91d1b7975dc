"""GLUS losses on hand-made tensors; expected values are derived by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from glus_ros.training.losses import (
    ContrastiveResult,
    LossWeights,
    SegTokenBank,
    glus_loss,
    mask_bce,
    mask_dice,
    object_contrastive,
    text_cross_entropy,
)

BIG = 30.0  # sigmoid(30) = 1 - 9e-14: a "certain" logit


def test_loss_weights_defaults_match_paper_table_a():
    w = LossWeights()
    assert (w.ce, w.dice, w.bce, w.contrastive, w.temperature) == (1.0, 0.5, 2.0, 0.1, 0.07)
    with pytest.raises(ValueError, match="temperature"):
        LossWeights(temperature=0.0)
    with pytest.raises(ValueError, match="bce"):
        LossWeights(bce=-1.0)


# ---------------------------------------------------------------- text CE


def test_text_ce_shifts_and_matches_hand_computation():
    # Position t predicts label t+1. Labels [-100, 0, 1]:
    #   logits[0] = [0, 0]  -> label 0: -log(1/2)              = log 2        = 0.693147
    #   logits[1] = [1, 0]  -> label 1: -log(e^0 / (e^1 + e^0)) = log(1 + e)   = 1.313262
    #   logits[2] is never used (it would predict a 4th token).
    # mean over the 2 supervised tokens = (0.693147 + 1.313262) / 2 = 1.003204
    # Unshifted it would be (log(1+e^-1) + ~10) / 2, far from this.
    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, -5.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 0, 1]])
    loss = text_cross_entropy(logits, labels)
    expected = (math.log(2.0) + math.log(1.0 + math.e)) / 2.0
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[0, 2] == 0)  # the last position gets no gradient


def test_text_ce_nothing_supervised_is_zero_with_graph():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = text_cross_entropy(logits, torch.full((2, 4), -100))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.all(logits.grad == 0)
    # Only the first label supervised: it has no predicting position, so still nothing supervised.
    labels = torch.full((2, 4), -100)
    labels[:, 0] = 1
    assert text_cross_entropy(logits, labels).item() == 0.0


def test_text_ce_bad_input():
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        text_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="label 7"):
        text_cross_entropy(torch.zeros(1, 3, 5), torch.tensor([[0, 7, 1]]))
    with pytest.raises(ValueError, match="shape"):
        text_cross_entropy(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- mask BCE / DICE


def test_bce_of_zero_logits_is_log2_for_any_target():
    # BCE(0, t) = -(t log 1/2 + (1-t) log 1/2) = log 2 whatever t is.
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    loss = mask_bce(torch.zeros(2, 2, 2), targets)
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_bce_hand_value_and_valid_drops_frames():
    # Mask 0: logits [[2, 0], [0, -2]], targets [[1, 0], [1, 0]]:
    #   BCE(2, 1) = log(1 + e^-2) = 0.126928; BCE(0, .) = log 2 = 0.693147 (twice); BCE(-2, 0) = 0.126928
    #   per-mask mean = (2 * 0.126928 + 2 * 0.693147) / 4 = 0.410038
    # Mask 1 is wildly wrong but marked invalid, so it must not count.
    logits = torch.tensor([[[2.0, 0.0], [0.0, -2.0]], [[-BIG, -BIG], [-BIG, -BIG]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    expected = (2 * math.log(1 + math.exp(-2)) + 2 * math.log(2)) / 4
    loss = mask_bce(logits, targets, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # With both valid it is the mean of the two per-mask means: (0.410038 + 30.0) / 2 (BCE(-30, 1) ~ 30).
    both = mask_bce(logits, targets)
    assert both.item() == pytest.approx((expected + BIG) / 2, abs=1e-4)


def test_mask_losses_with_no_valid_frame_are_zero_with_graph():
    logits = torch.randn(2, 3, 3, requires_grad=True)
    none = torch.tensor([False, False])
    for fn in (mask_bce, mask_dice):
        loss = fn(logits, torch.ones(2, 3, 3), none)
        assert loss.item() == 0.0
        assert loss.requires_grad


def test_dice_perfect_complement_and_empty():
    target = torch.zeros(1, 32, 32)
    target[0, 8:24, 8:24] = 1.0  # 256 px
    perfect = (target * 2 - 1) * BIG
    # perfect: 1 - (2*256 + 1) / (256 + 256 + 1) = 0
    assert mask_dice(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # complement: sum(p t) = 0, sum(p) = 1024 - 256 = 768 -> 1 - 1 / (768 + 256 + 1) = 1 - 1/1025 = 0.999024
    assert mask_dice(-perfect, target).item() == pytest.approx(1.0 - 1.0 / 1025.0, abs=1e-6)
    # empty target predicted empty: 1 - (0 + 1) / (~0 + 0 + 1) ~ 0 (the eps=1 smoothing)
    assert mask_dice(torch.full((1, 4, 4), -BIG), torch.zeros(1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_hand_2x2():
    # logits [[0, 0], [30, -30]] -> p = [[0.5, 0.5], [1, 0]]; targets [[1, 0], [1, 0]]
    #   sum(p t) = 0.5 + 1 = 1.5; sum(p) = 2; sum(t) = 2
    #   dice = 1 - (2 * 1.5 + 1) / (2 + 2 + 1) = 1 - 4/5 = 0.2
    logits = torch.tensor([[[0.0, 0.0], [BIG, -BIG]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert mask_dice(logits, targets).item() == pytest.approx(0.2, abs=1e-6)
    # eps = 0.5: 1 - (3 + 0.5) / (4 + 0.5) = 1 - 7/9 = 0.222222
    assert mask_dice(logits, targets, eps=0.5).item() == pytest.approx(2.0 / 9.0, abs=1e-6)


def test_mask_bad_input():
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        mask_bce(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="valid shape"):
        mask_dice(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.tensor([True]))
    with pytest.raises(ValueError, match="bool"):
        mask_bce(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_bce(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 255.0))
    with pytest.raises(ValueError, match="eps"):
        mask_dice(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), eps=0.0)


# ---------------------------------------------------------------- object contrastive

# Two expressions of object 0 give identical [SEG] tokens; one expression of object 1 is orthogonal.
A = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
IDS = torch.tensor([0, 0, 1])


def test_contrastive_hand_value():
    # tau = 1. Anchor 0: positive anchor 1 (s = 1), negative anchor 2 (s = 0):
    #   -log(e^1 / (e^1 + e^0)) = log(1 + e^-1) = 0.313262. Anchor 1 is symmetric, anchor 2 has no positive.
    #   mean over the 2 anchors with positives = 0.313262
    res = object_contrastive(A, IDS, temperature=1.0)
    assert isinstance(res, ContrastiveResult)
    assert res.num_anchors == 2
    assert res.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # Scaling an anchor must not matter: embeddings are L2-normalised first.
    scaled = object_contrastive(A * torch.tensor([[3.0], [0.5], [7.0]]), IDS, temperature=1.0)
    assert scaled.loss.item() == pytest.approx(res.loss.item(), abs=1e-6)


def test_contrastive_temperature_changes_value():
    # tau = 0.5: log(1 + e^(-1/0.5)) = log(1 + e^-2) = 0.126928
    assert object_contrastive(A, IDS, temperature=0.5).loss.item() == pytest.approx(
        math.log(1 + math.exp(-2)), abs=1e-6
    )
    # tau = 0.07: log(1 + e^(-14.2857)) = 6.25e-7
    assert object_contrastive(A, IDS).loss.item() == pytest.approx(math.log1p(math.exp(-1 / 0.07)), rel=1e-3)


def test_contrastive_frozenset_ids_equal_tensor_ids():
    ids = [frozenset({1, 2}), frozenset({2, 1}), frozenset({3})]
    res = object_contrastive(A, ids, temperature=1.0)
    assert res.num_anchors == 2
    assert res.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_contrastive_no_positive_is_zero_with_graph():
    anchors = torch.randn(3, 4, requires_grad=True)
    res = object_contrastive(anchors, torch.tensor([0, 1, 2]))
    assert res.num_anchors == 0
    assert res.loss.item() == 0.0
    assert res.loss.requires_grad
    res.loss.backward()
    assert torch.all(anchors.grad == 0)


def test_contrastive_no_negative_has_zero_loss_and_finite_grad():
    # Only positives: -log(e^a / e^a) = 0; the -inf logsumexp of an empty negative set must not make NaN grads.
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    res = object_contrastive(anchors, torch.tensor([4, 4]))
    assert res.num_anchors == 2
    assert res.loss.item() == pytest.approx(0.0, abs=1e-7)
    res.loss.backward()
    assert torch.isfinite(anchors.grad).all()


def test_contrastive_bank_negatives_raise_loss():
    # tau = 1, one bank entry [0.6, 0.8] of object 5: for anchors 0 and 1 it is a negative with s = 0.6:
    #   -log(e^1 / (e^1 + e^0 + e^0.6)) = log(1 + e^-1 + e^-0.4) = log(1 + 0.367879 + 0.670320) = 0.712035
    bank = torch.tensor([[0.6, 0.8]])
    res = object_contrastive(A, IDS, bank, torch.tensor([5]), temperature=1.0)
    assert res.num_anchors == 2
    assert res.loss.item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-0.4)), abs=1e-6)
    assert res.loss.item() > object_contrastive(A, IDS, temperature=1.0).loss.item()


def test_contrastive_bank_entry_of_same_object_is_a_positive():
    # Batch alone has no positive. A bank entry [1, 0] of object 0 is anchor 0's positive (s = 1), anchor 1
    # (s = 0) is its negative: log(1 + e^-1) = 0.313262, one anchor.
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    res = object_contrastive(anchors, torch.tensor([0, 1]), torch.tensor([[2.0, 0.0]]), torch.tensor([0]), 1.0)
    assert res.num_anchors == 1
    assert res.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_contrastive_no_object_ids_are_ignored():
    # Anchor 3 (id -1) would be a negative with s = 1 for anchors 0/1 if it counted; it must not.
    anchors = torch.cat([A, torch.tensor([[1.0, 0.0]])])
    res = object_contrastive(anchors, torch.tensor([0, 0, 1, -1]), temperature=1.0)
    assert res.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    sets = [frozenset({0}), frozenset({0}), frozenset({1}), frozenset()]
    assert object_contrastive(anchors, sets, temperature=1.0).num_anchors == 2


def test_contrastive_bad_input():
    with pytest.raises(ValueError, match="2 object ids for 3 anchors"):
        object_contrastive(A, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"bank shape \(1, 3\)"):
        object_contrastive(A, IDS, torch.zeros(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="together"):
        object_contrastive(A, IDS, torch.zeros(1, 2), None)
    with pytest.raises(ValueError, match="temperature"):
        object_contrastive(A, IDS, temperature=0.0)
    with pytest.raises(ValueError, match="mix kinds"):
        object_contrastive(A, IDS, torch.zeros(1, 2), [frozenset({0})])
    with pytest.raises(ValueError, match="frozenset"):
        object_contrastive(A, [{0}, {0}, {1}])  # type: ignore[list-item]


# ---------------------------------------------------------------- bank


def test_bank_is_bounded_fifo_and_detached():
    bank = SegTokenBank(capacity=3)
    assert len(bank) == 0
    assert bank.tensors() == (None, None)
    emb = torch.arange(10.0).reshape(5, 2).requires_grad_()
    bank.add(emb[:2], torch.tensor([0, 1]))
    bank.add(emb[2:], torch.tensor([2, 3, 4]))
    assert len(bank) == 3
    stored, ids = bank.tensors()
    assert stored is not None and isinstance(ids, torch.Tensor)
    assert ids.tolist() == [2, 3, 4]  # the two oldest left first
    assert torch.equal(stored, torch.tensor([[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]))
    assert not stored.requires_grad


def test_bank_state_round_trip_lands_on_the_training_device():
    """A resumed run reads its checkpoint onto the CPU; the bank must follow the model to its device
    (on CUDA a CPU bank beside new CUDA embeddings failed the next stack). 'meta' stands in for a GPU here."""
    bank = SegTokenBank(capacity=3)
    bank.add(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2]))
    state = bank.state_dict()
    same = SegTokenBank(capacity=3)
    same.load_state_dict(state)
    assert torch.equal(same.tensors()[0], bank.tensors()[0]) and same.tensors()[1].tolist() == [0, 1, 2]
    moved = SegTokenBank(capacity=3)
    moved.load_state_dict(state, torch.device("meta"))
    moved.add(torch.ones(1, 2, device="meta"), torch.tensor([3]))
    stored, ids = moved.tensors()
    assert stored.device.type == "meta" and stored.shape == (3, 2) and ids.device.type == "meta"
    with pytest.raises(ValueError, match="capacity 3 in the checkpoint, 4 configured"):
        SegTokenBank(capacity=4).load_state_dict(state)


def test_bank_frozenset_ids_skip_no_object_and_reject_bad_input():
    bank = SegTokenBank(capacity=4)
    bank.add(torch.ones(3, 2), [frozenset({1}), frozenset(), frozenset({1, 2})])
    stored, ids = bank.tensors()
    assert ids == [frozenset({1}), frozenset({1, 2})]
    assert stored is not None and stored.shape == (2, 2)
    with pytest.raises(ValueError, match="mix kinds"):
        bank.add(torch.ones(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="dim 3"):
        bank.add(torch.ones(1, 3), [frozenset({1})])
    with pytest.raises(ValueError, match="capacity=0"):
        SegTokenBank(capacity=0)


# ---------------------------------------------------------------- total


def _batch():
    torch.manual_seed(0)
    text_logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    mask_logits = torch.randn(3, 4, 4, requires_grad=True)
    mask_targets = (torch.rand(3, 4, 4) > 0.5).float()
    valid = torch.tensor([True, True, False])
    return text_logits, labels, mask_logits, mask_targets, valid


def test_glus_loss_total_is_weighted_sum():
    text_logits, labels, mask_logits, mask_targets, valid = _batch()
    seg = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], requires_grad=True)
    bank = SegTokenBank()
    bank.add(torch.tensor([[0.6, 0.8]]), torch.tensor([9]))
    w = LossWeights(ce=1.5, dice=0.25, bce=3.0, contrastive=0.7, temperature=0.5)
    out = glus_loss(text_logits, labels, mask_logits, mask_targets, valid, seg, torch.tensor([0, 0, 1]), bank, w)
    assert out["ce"].item() == pytest.approx(text_cross_entropy(text_logits, labels).item())
    assert out["dice"].item() == pytest.approx(mask_dice(mask_logits, mask_targets, valid).item())
    con = object_contrastive(seg, torch.tensor([0, 0, 1]), *bank.tensors(), temperature=0.5)
    assert out["contrastive"].item() == pytest.approx(con.loss.item())
    assert int(out["contrastive_anchors"]) == 2
    expected = 1.5 * out["ce"] + 3.0 * out["bce"] + 0.25 * out["dice"] + 0.7 * out["contrastive"]
    assert out["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    out["total"].backward()
    assert seg.grad is not None and seg.grad.abs().sum() > 0
    assert len(bank) == 1  # the loss only reads the bank


def test_glus_loss_without_positives_leaves_contrastive_out():
    text_logits, labels, mask_logits, mask_targets, valid = _batch()
    out = glus_loss(text_logits, labels, mask_logits, mask_targets, valid, torch.randn(2, 4), torch.tensor([0, 1]))
    assert int(out["contrastive_anchors"]) == 0
    assert out["contrastive"].item() == 0.0
    expected = 1.0 * out["ce"] + 2.0 * out["bce"] + 0.5 * out["dice"]  # default weights
    assert out["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    no_seg = glus_loss(text_logits, labels, mask_logits, mask_targets, valid)
    assert no_seg["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="together"):
        glus_loss(text_logits, labels, mask_logits, mask_targets, valid, torch.randn(2, 4), None)
