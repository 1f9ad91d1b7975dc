"""The grounding map ([SEG] matched to the query frames' token states -> SAM 2 mask prompt) and the
attending point head that reads the same states."""

import numpy as np
import pytest
import torch

from glus_ros.inference import VideoSegmenter, load_model
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.model.glus import GLUSModel
from glus_ros.model.grounding_map import GroundingMap, cell_centres, grid_targets, grounding_pick_loss, mask_prompt
from glus_ros.model.point_head import PointHead, decode_points
from glus_ros.model.transforms import clip_input, sam_input, to_tensor
from glus_ros.training.step import forward_clips

from helpers_model import moving_disk_clip, synthetic_batch


def _grounded_tiny(**vlm) -> GLUSModel:
    torch.manual_seed(0)
    return GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True, **vlm}}).eval()


def _window(model: GLUSModel):
    pixels = to_tensor(moving_disk_clip(8))
    embeds = model.encode_clip_frames(clip_input(pixels, model.cfg.vlm.image_size))
    return embeds, model.encode_sam_frames(sam_input(pixels, model.sam.image_size))


def test_grid_targets_mark_every_cell_the_object_touches():
    mask = torch.zeros(16, 16)
    mask[3:6, 7:10] = 1          # rows 3-5 (cell row 0 and 1 at side 4), cols 7-9 (cell cols 1 and 2)
    cells = grid_targets(mask[None], 4)[0]
    assert cells.tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert grid_targets(torch.zeros(2, 3, 8, 8), 4).shape == (2, 3, 4, 4)


def test_map_is_a_dot_product_over_a_square_grid():
    head = GroundingMap(8, dim=4)
    seg, tokens = torch.randn(2, 3, 8), torch.randn(2, 3, 16, 8)
    logits = head(seg, tokens)
    assert logits.shape == (2, 3, 4, 4)
    want = (head.query(seg)[..., None, :] * head.key(tokens)).sum(-1) * head.scale
    assert torch.allclose(logits.flatten(-2), want, atol=1e-5)
    with pytest.raises(ValueError, match="square token grid"):
        head(seg, torch.randn(2, 3, 12, 8))
    assert mask_prompt(logits[:, 0], (32, 32)).shape == (2, 1, 32, 32)


def test_model_emits_one_map_per_query_frame_and_sam_reads_it():
    model = _grounded_tiny()
    with torch.no_grad():
        embeds, feats = _window(model)
        out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
        side = model.cfg.vlm.patches_per_side // 2
        assert out.grounding.shape == (1, 4, side, side)
        assert out.query_states.shape == (1, 4, model.cfg.vlm.tokens_per_frame, model.vlm.hidden_size)
        frame = feats.select(slice(4, 5))
        plain = model.track_step(frame, out.prompts[:, 0], None)
        mapped = model.track_step(frame, out.prompts[:, 0], None, out.grounding[:, 0])
        flipped = model.track_step(frame, out.prompts[:, 0], None, -out.grounding[:, 0])
    # the map reaches the mask decoder through the prompt encoder's mask path
    assert not torch.allclose(plain.logits, mapped.logits)
    assert not torch.allclose(mapped.logits, flipped.logits)


def test_global_only_models_have_no_map_and_other_modules_initialise_unchanged():
    torch.manual_seed(0)
    base = GLUSModel.from_config("tiny")
    grounded = _grounded_tiny()
    for (name, a), (_, b) in zip(base.state_dict().items(),
                                 ((k, v) for k, v in grounded.state_dict().items()
                                  if not k.startswith("grounding_map.")), strict=True):
        assert torch.equal(a, b), name
    torch.manual_seed(0)
    global_only = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True},
                                                           "sampling": {"query_in_prompt": False}}).eval()
    with torch.no_grad():
        embeds, _ = _window(global_only)
        out = global_only.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
    assert out.grounding is None and out.query_states is None


def test_trained_folder_gains_a_map_by_override_and_keeps_it_when_saved(tmp_path):
    torch.manual_seed(0)
    plain = GLUSModel.from_config("tiny")
    save_model_dir(plain, tmp_path / "plain")
    grown = load_model(tmp_path / "plain", overrides={"vlm": {"grounding_map": True}})
    assert grown.grounding_map is not None
    assert torch.equal(grown.seg_projection[0].weight, plain.seg_projection[0].weight)
    save_model_dir(grown, tmp_path / "grown")
    again = load_model(tmp_path / "grown")
    assert again.cfg.vlm.grounding_map
    assert torch.equal(again.grounding_map.key.weight, grown.grounding_map.key.weight)
    masks = VideoSegmenter(again).segment(moving_disk_clip(6), "the red circle").masks
    assert masks.shape == (6, 72, 96)


def test_training_step_supervises_the_map_and_it_learns_the_cells():
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True}}).train()
    batch = synthetic_batch(model)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(30):
        losses = forward_clips(model, batch, grounding=(1.0, 0.0))
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append(float(losses["grounding"].detach()))
    assert history[-1] < 0.5 * history[0]
    without = forward_clips(model, batch)                    # weight 0: no map loss, the map still decodes
    assert "grounding" not in without


def test_dropping_the_map_decodes_from_the_sparse_prompt_alone():
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True}}).eval()
    batch = synthetic_batch(model)
    with torch.no_grad():
        kept = forward_clips(model, batch, grounding=(1.0, 0.0))["mask_logits"]
        dropped = forward_clips(model, batch, grounding=(1.0, 1.0))["mask_logits"]
    assert not torch.allclose(kept, dropped)


# --- the attending point head ----------------------------------------------------------------------
def test_attending_head_needs_token_states_and_keeps_points_in_the_frame():
    head = PointHead(16, 4, locate="attend")
    with pytest.raises(ValueError, match="token states"):
        head(torch.zeros(1, 2, 16))
    with pytest.raises(ValueError, match="square token grid"):
        head(torch.zeros(1, 2, 16), torch.zeros(1, 2, 5, 16))
    with pytest.raises(ValueError, match="locate"):
        PointHead(16, 4, locate="guess")
    raw = head(torch.randn(2, 3, 16) * 50, torch.randn(2, 3, 16, 16) * 50)
    assert raw.shape == (2, 3, 4, 3) and torch.isfinite(raw).all()
    xy = torch.sigmoid(raw[..., :2])
    assert bool(((xy > 0) & (xy < 1)).all())
    assert decode_points(head(torch.zeros(1, 1, 16), torch.zeros(1, 1, 16, 16))) == [[[]]]  # absent at start


def test_attending_head_learns_to_point_at_the_marked_cell():
    """Each sample marks one cell of a 4x4 grid; the head must point inside that cell (1/4 of the frame)."""
    torch.manual_seed(0)
    head = PointHead(16, 2, locate="attend")
    optim = torch.optim.Adam(head.parameters(), lr=3e-3)
    marker = torch.randn(16)

    def sample(n: int):
        tokens = torch.randn(n, 1, 16, 16) * 0.1
        cells = torch.randint(0, 16, (n,))
        tokens[torch.arange(n), 0, cells] += marker
        target = torch.stack([(cells % 4 + 0.3) / 4, (cells // 4 + 0.6) / 4], dim=-1)  # off-centre in the cell
        return tokens, cells, target

    seg = torch.ones(1, 1, 16)
    for _ in range(400):
        tokens, _, target = sample(32)
        raw = head(seg.expand(32, 1, 16), tokens)
        xy = torch.sigmoid(raw[:, 0, 0, :2])
        loss = (xy - target).abs().sum(-1).mean() + torch.nn.functional.binary_cross_entropy_with_logits(
            raw[:, 0, :, 2], torch.tensor([1.0, 0.0]).expand(32, 2))
        optim.zero_grad()
        loss.backward()
        optim.step()
    tokens, cells, target = sample(64)
    with torch.no_grad():
        points = decode_points(head(seg.expand(64, 1, 16), tokens))
    hits = [len(p[0]) == 1 and int(p[0][0][0] * 4) + 4 * int(p[0][0][1] * 4) == int(c)
            for p, c in zip(points, cells, strict=True)]
    assert np.mean(hits) > 0.9


# --- spatial terms: position and relation words as geometry ----------------------------------------

def _look_alike_frames(gen: torch.Generator, vocab: torch.Tensor, n: int, relation: bool):
    """Frames of a 4x4 grid holding two identical "circle" tokens (and a "square" anchor for relations);
    [SEG] = circle + the word; target = the circle the word picks (left/right, or near/far from the square).
    ``vocab`` rows: empty cell, circle, square, word 0, word 1, the noun "square"."""
    seg, words, tokens, target, rival = [], [], [], [], []
    while len(seg) < n:
        a, b, s = torch.randperm(16, generator=gen)[:3].tolist()
        centres = {c: torch.tensor([c % 4, c // 4], dtype=torch.float32) for c in (a, b, s)}
        word = int(torch.randint(2, (1,), generator=gen))
        if relation:
            da, db = (float((centres[c] - centres[s]).norm()) for c in (a, b))
            if abs(da - db) < 1.0:
                continue
            pick = a if (da < db) == (word == 0) else b          # word 0: near, word 1: far
        else:
            if centres[a][0] == centres[b][0]:
                continue
            pick = a if (centres[a][0] < centres[b][0]) == (word == 0) else b   # word 0: left, word 1: right
        frame = vocab[0].repeat(16, 1)
        frame[a], frame[b] = vocab[1], vocab[1]
        if relation:
            frame[s] = vocab[2]
        seg.append(vocab[1] + vocab[3 + word] + (vocab[5] if relation else 0))
        words.append(vocab[3 + word])
        tokens.append(frame)
        target.append(pick)
        rival.append(b if pick == a else a)
    return torch.stack(seg), torch.stack(words), torch.stack(tokens), torch.tensor(target), torch.tensor(rival)


def _strict_pick_rate(head: GroundingMap, data) -> float:
    seg, words, tokens, target, rival = data
    with torch.no_grad():
        logits = head(seg, tokens, words).flatten(-2)
    rows = torch.arange(len(target))
    return float((logits[rows, target] > logits[rows, rival] + 1e-4).float().mean())


@pytest.mark.parametrize("relation", [False, True], ids=["left-right", "near-far"])
def test_spatial_terms_learn_to_tell_identical_look_alikes_apart(relation):
    gen = torch.Generator().manual_seed(3)
    vocab = torch.randn(6, 16, generator=gen)
    train = _look_alike_frames(gen, vocab, 512, relation)
    held_out = _look_alike_frames(gen, vocab, 256, relation)
    heads = {}
    for spatial in (False, True):
        torch.manual_seed(0)
        head = heads[spatial] = GroundingMap(16, dim=8, spatial=spatial)
        optim = torch.optim.Adam(head.parameters(), lr=1e-2)
        seg, words, tokens, target, _ = train
        cells = torch.nn.functional.one_hot(target, 16).float()
        for _ in range(300):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(seg, tokens, words).flatten(-2), cells)
            optim.zero_grad()
            loss.backward()
            optim.step()
    # matching alone scores identical tokens identically; the ramp / anchor nearness tells them apart
    assert _strict_pick_rate(heads[False], held_out) == 0.0
    assert _strict_pick_rate(heads[True], held_out) >= 0.9


def test_spatial_terms_start_at_zero_and_read_the_cell_geometry():
    torch.manual_seed(0)
    plain = GroundingMap(8, dim=4)
    torch.manual_seed(0)
    spatial = GroundingMap(8, dim=4, spatial=True)
    seg, tokens, words = torch.randn(2, 3, 8), torch.randn(2, 3, 16, 8), torch.randn(2, 3, 8)
    assert torch.equal(plain(seg, tokens), spatial(seg, tokens, words))   # a trained map gains them unchanged
    assert cell_centres(2).tolist() == [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    with torch.no_grad():
        spatial.spatial.direction.bias.copy_(torch.tensor([-1.0, 0.0]))  # a < 0: the left wins
        left = spatial(seg, tokens, words) - plain(seg, tokens)
    assert torch.allclose(left[..., :, 0] - left[..., :, 3], torch.full_like(left[..., :, 0], 1.5))
    with pytest.raises(ValueError, match="grid side"):
        cell_centres(0)
    with pytest.raises(ValueError, match="pooled words"):
        spatial(seg, tokens)


def test_spatial_terms_need_the_map_and_a_trained_folder_gains_them(tmp_path):
    with pytest.raises(ValueError, match="grounding_spatial"):
        GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_spatial": True}})
    model = _grounded_tiny()
    save_model_dir(model, tmp_path / "map")
    grown = load_model(tmp_path / "map", overrides={"vlm": {"grounding_spatial": True}})
    assert grown.grounding_map.spatial is not None
    with torch.no_grad():
        embeds, _ = _window(model)
        before = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the circle on the left"]).grounding
        after = grown.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the circle on the left"]).grounding
    assert torch.allclose(before, after, atol=1e-5)
    save_model_dir(grown, tmp_path / "grown")
    assert load_model(tmp_path / "grown").grounding_map.spatial is not None


def test_pick_loss_is_the_cross_entropy_of_the_cells_against_the_target():
    flat = torch.zeros(1, 2, 2)
    one = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    two = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert torch.isclose(grounding_pick_loss(flat, one), torch.log(torch.tensor(4.0)))
    assert torch.isclose(grounding_pick_loss(flat, two), torch.log(torch.tensor(2.0)))   # any target cell may win
    on_target = torch.tensor([[[8.0, 0.0], [0.0, 0.0]]])
    on_look_alike = torch.tensor([[[0.0, 8.0], [0.0, 0.0]]])
    assert grounding_pick_loss(on_target, one) < 0.01 < 7.0 < grounding_pick_loss(on_look_alike, one)
    # maps whose target is absent are left out of the mean, and a batch of only those gives 0 (with a gradient)
    mixed = grounding_pick_loss(torch.cat([flat, on_look_alike]), torch.cat([one, torch.zeros(1, 2, 2)]))
    assert torch.isclose(mixed, torch.log(torch.tensor(4.0)))
    logits = torch.randn(3, 2, 2, requires_grad=True)
    empty = grounding_pick_loss(logits, torch.zeros(3, 2, 2))
    empty.backward()
    assert float(empty.detach()) == 0.0 and logits.grad is not None


def test_training_step_adds_the_pick_term_and_it_learns():
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True, "grounding_spatial": True}}).train()
    batch = synthetic_batch(model)
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(20):
        losses = forward_clips(model, batch, grounding=(0.0, 0.0, 1.0))
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append(float(losses["grounding_pick"].detach()))
    assert "grounding" not in losses
    assert history[-1] < 0.5 * history[0]
    assert "grounding_pick" not in forward_clips(model, batch, grounding=(1.0, 0.0))


def test_spatial_terms_read_the_expressions_words_not_the_frames_or_the_answer():
    model = _grounded_tiny(grounding_spatial=True)
    spatial = model.grounding_map.spatial
    with torch.no_grad():                        # uniform attention: the pooled words are the words' mean
        spatial.word_query.weight.zero_()
        spatial.word_query.bias.zero_()
    captured = []
    spatial.mix.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    hidden = model.vlm.hidden_size

    def pooled(expression: str, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            model.seg_prompts(frames[None, :4], frames[None, 4:], [expression])
        return captured[-1][0, :, hidden:]                                     # (num_query, hidden)

    embeds, _ = _window(model)
    words = pooled("the circle on the left", embeds)
    enc = model.prompts.encode("the circle on the left", 4, 4)
    text = ((enc.labels == -100) & (enc.input_ids != model.prompts.image_id)
            & (enc.input_ids != model.tokenizer.bos_token_id))
    with torch.no_grad():
        want = model.vlm.language_model.embed_tokens(enc.input_ids[text]).mean(dim=0)
    want = torch.nn.functional.layer_norm(want, want.shape)                   # the terms read them normalised
    assert torch.allclose(words, want.expand_as(words), atol=1e-4)
    assert torch.allclose(pooled("the circle on the left", embeds.flip(0)), words, atol=1e-5)
    assert not torch.allclose(pooled("the circle on the right", embeds), words, atol=1e-3)


def test_anchors_are_the_spatial_terms_own_and_the_anchor_loss_teaches_them_the_reference():
    gen = torch.Generator().manual_seed(4)
    vocab = torch.randn(6, 16, generator=gen)
    train = _look_alike_frames(gen, vocab, 512, relation=True)
    held_out = _look_alike_frames(gen, vocab, 256, relation=True)

    def references(data) -> torch.Tensor:        # the "square" token's cell: the object the relation names
        tokens = data[2]
        return (tokens == vocab[2]).all(dim=-1).float().unflatten(-1, (4, 4))

    torch.manual_seed(0)
    head = GroundingMap(16, dim=8, spatial=True)
    seg, words, tokens = train[:3]
    anchors = head.anchors(seg, tokens, words)
    assert anchors.shape == (512, 2, 4, 4)
    with torch.no_grad():                       # the map's nearness terms are distances to these anchors
        head.spatial.nearness.bias.copy_(torch.tensor([0.5, 1.0]))
        head.spatial.anchor.bias[8:] += torch.randn(8, generator=gen)      # near and far anchors apart
        centres = cell_centres(4)
        expected = head.anchors(seg, tokens, words).flatten(-2).softmax(dim=-1) @ torch.cdist(centres, centres)
        near, far = torch.nn.functional.softplus(torch.tensor([0.5, 1.0]))
        matching = torch.einsum("nd,ntd->nt", head.query(seg), head.key(tokens)) * head.scale
        assert torch.allclose(head(seg, tokens, words).flatten(-2) - matching,
                              far * expected[:, 1] - near * expected[:, 0], atol=1e-5)
    torch.manual_seed(0)
    head = GroundingMap(16, dim=8, spatial=True)
    truth = references(held_out).flatten(-2).argmax(dim=-1)

    def found_rate() -> float:
        with torch.no_grad():
            found = head.anchors(*[held_out[i] for i in (0, 2, 1)]).flatten(-2).argmax(dim=-1)   # (N, 2)
        return float((found == truth[:, None]).float().mean())

    assert found_rate() < 0.5
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    target = references(train)[:, None].expand(-1, 2, -1, -1)
    for _ in range(150):
        loss = grounding_pick_loss(head.anchors(seg, tokens, words), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert found_rate() >= 0.95
    with pytest.raises(ValueError, match="no spatial terms"):
        GroundingMap(16, dim=8).anchors(seg, tokens, words)


def test_training_step_adds_the_anchor_term_only_with_reference_cells_and_it_learns():
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True, "grounding_spatial": True}}).train()
    batch = synthetic_batch(model)
    size = batch["query_clip"].shape[:2]
    references = torch.zeros(*size, 4, 4)
    references[0, :, 0, 3] = 1.0                 # sample 0 relates to whatever is in the top-right cell
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(20):
        losses = forward_clips(model, {**batch, "reference_cells": references}, grounding=(0.0, 0.0, 0.0, 1.0))
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append(float(losses["grounding_anchor"].detach()))
    assert history[-1] < 0.5 * history[0]
    assert "grounding_anchor" not in forward_clips(model, batch, grounding=(0.0, 0.0, 0.0, 1.0))
    plain = _grounded_tiny().train()
    with pytest.raises(ValueError, match="grounding_spatial"):
        forward_clips(plain, {**batch, "reference_cells": references}, grounding=(0.0, 0.0, 0.0, 1.0))
