"""The grounding map's motion field: how each cell's content moved over the context frames, read by the
spatial terms so "the square that moves left" can pick one of two identical squares."""

import json

import numpy as np
import pytest
import torch

from glus_ros.data.synth import write_split
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.inference import VideoSegmenter, load_model
from glus_ros.model.checkpoints import save_model_dir
from glus_ros.model.config import load_config
from glus_ros.model.glus import GLUSModel
from glus_ros.model.grounding_map import GroundingMap, grounding_pick_loss
from glus_ros.model.motion_field import MotionField
from glus_ros.model.transforms import clip_input, to_tensor
from glus_ros.training.aux_heads import SynthMotionCells, motion_cell_loss
from glus_ros.training.data import ReferringClipDataset, collate_clips
from glus_ros.training.step import forward_clips

from helpers_model import moving_disk_clip, synthetic_batch

MOTION = {"vlm": {"grounding_map": True, "grounding_spatial": True, "grounding_motion": 4}}


def _motion_tiny() -> GLUSModel:
    torch.manual_seed(0)
    return GLUSModel.from_config("tiny", overrides=MOTION)


def _two_squares(gen: torch.Generator, vocab: torch.Tensor, n: int):
    """4 context frames (64 px) of two identical squares on a 4x4 grid of 16 px cells: one moves 2 px per frame
    sideways, the other stays; the token grid shows two identical "square" tokens. Word 0 asks for the
    moving one, word 1 for the still one. ``vocab`` rows: empty cell, square, word 0, word 1."""
    seg, words, tokens, pixels, target, rival = [], [], [], [], [], []
    while len(seg) < n:
        a, b = torch.randperm(16, generator=gen)[:2].tolist()
        word = int(torch.randint(2, (1,), generator=gen))
        step = 2 if int(torch.randint(2, (1,), generator=gen)) else -2
        frames = torch.zeros(4, 3, 64, 64)
        for t in range(4):
            for cell, dx in ((a, round(step * (t - 1.5))), (b, 0)):
                x0, y0 = 16 * (cell % 4) + 5 + dx, 16 * (cell // 4) + 5
                frames[t, :, y0:y0 + 6, x0:x0 + 6] = 1.0
        frame = vocab[0].repeat(16, 1)
        frame[a], frame[b] = vocab[1], vocab[1]
        seg.append(vocab[1] + vocab[2 + word])
        words.append(vocab[2 + word])
        tokens.append(frame)
        pixels.append(frames)
        target.append(a if word == 0 else b)
        rival.append(b if word == 0 else a)
    return (torch.stack(seg), torch.stack(words), torch.stack(tokens), torch.stack(pixels), torch.tensor(target),
            torch.tensor(rival))


def test_motion_term_learns_to_tell_a_moving_look_alike_from_a_still_one():
    gen = torch.Generator().manual_seed(5)
    vocab = torch.randn(4, 16, generator=gen)
    train, held_out = _two_squares(gen, vocab, 192), _two_squares(gen, vocab, 96)
    rates = {}
    for frames in (0, 4):
        torch.manual_seed(0)
        head = GroundingMap(16, dim=8, spatial=True, motion_frames=frames, motion_dim=8)
        optim = torch.optim.Adam(head.parameters(), lr=3e-3)
        seg, words, tokens, pixels, target, _ = train

        def logits(seg, words, tokens, pixels, head=head):
            motion = head.motion(pixels, 4) if head.motion is not None else None
            return head(seg, tokens, words, motion)

        cells = torch.nn.functional.one_hot(target, 16).float().unflatten(-1, (4, 4))
        for _ in range(100):
            loss = grounding_pick_loss(logits(seg, words, tokens, pixels), cells)
            optim.zero_grad()
            loss.backward()
            optim.step()
        seg, words, tokens, pixels, target, rival = held_out
        with torch.no_grad():
            scores = logits(seg, words, tokens, pixels).flatten(-2)
        rows = torch.arange(len(target))
        rates[frames] = float((scores[rows, target] > scores[rows, rival] + 1e-4).float().mean())
    assert rates[0] <= 0.65            # identical tokens: without motion only where they are, i.e. chance
    assert rates[4] >= 0.9


def test_motion_field_starts_at_zero_and_checks_its_input():
    torch.manual_seed(0)
    plain = GroundingMap(8, dim=4, spatial=True)
    torch.manual_seed(0)
    moving = GroundingMap(8, dim=4, spatial=True, motion_frames=3, motion_dim=6)
    seg, tokens, words = torch.randn(2, 3, 8), torch.randn(2, 3, 16, 8), torch.randn(2, 3, 8)
    field = moving.motion(torch.rand(2, 3, 3, 64, 64), 4)
    assert field.shape == (2, 16, 6)
    # a map that gains a motion field is unchanged until it learns to read it
    assert torch.equal(plain(seg, tokens, words), moving(seg, tokens, words, field[:, None].expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"expected \(B, 3, 3, S, S\) context frames"):
        moving.motion(torch.rand(2, 4, 3, 64, 64), 4)
    with pytest.raises(ValueError, match="at least 2 context frames"):
        MotionField(1)
    with pytest.raises(ValueError, match="set spatial too"):
        GroundingMap(8, dim=4, motion_frames=3)


def test_motion_config_needs_the_spatial_terms_and_matching_context_frames():
    with pytest.raises(ValueError, match=r"set vlm\.grounding_spatial too"):
        load_config("tiny", {"vlm": {"grounding_map": True, "grounding_motion": 4}})
    with pytest.raises(ValueError, match=r">= 2, or 0 for none"):
        load_config("tiny", {"vlm": {"grounding_map": True, "grounding_spatial": True, "grounding_motion": 1}})
    with pytest.raises(ValueError, match=r"reads 4 context frames .* sampling\.num_context is 3"):
        load_config("tiny", {**MOTION, "sampling": {"num_context": 3}})
    assert load_config("tiny", {**MOTION, "sampling": {"num_context": 0}}).vlm.grounding_motion == 4  # local-only


def test_model_reads_the_context_pixels_and_a_trained_folder_gains_the_field(tmp_path):
    torch.manual_seed(0)
    spatial = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True, "grounding_spatial": True}})
    save_model_dir(spatial, tmp_path / "spatial")
    grown = load_model(tmp_path / "spatial", overrides=MOTION).eval()
    assert grown.grounding_map.motion is not None
    frames = moving_disk_clip(12)
    with torch.no_grad():  # the field starts at zero: the grown model segments as the one it grew from
        before = VideoSegmenter(spatial.eval()).segment(frames, "the red circle").masks
        assert np.array_equal(before, VideoSegmenter(grown).segment(frames, "the red circle").masks)
        grown.grounding_map.spatial.motion.weight.normal_()   # once it reads the field, the context frames' motion
        pixels = clip_input(to_tensor(frames), grown.cfg.vlm.image_size)   # enters the map
        embeds = grown.encode_clip_frames(pixels)[None]
        context = [1, 4, 7, 10]

        def grounding(context_pixels: torch.Tensor) -> torch.Tensor:
            return grown.seg_prompts(embeds[:, context], embeds[:, :4], ["the red circle"],
                                     context_pixels=context_pixels).grounding

        forward, backward = grounding(pixels[context][None]), grounding(pixels[context[::-1]][None])
        assert not torch.allclose(forward, backward, atol=1e-4)
        with pytest.raises(ValueError, match="pass context_pixels"):
            grown.seg_prompts(embeds[:, context], embeds[:, :4], ["the red circle"])
    save_model_dir(grown, tmp_path / "grown")
    assert load_model(tmp_path / "grown").grounding_map.motion is not None


def _meta(split_dir, objects, size=(64, 64)):
    (split_dir / "synth_meta.json").write_text(json.dumps({"videos": {"v": {"size": list(size), "objects": objects}}}))


def test_motion_targets_are_each_objects_moves_in_the_cell_of_its_mean_centre(tmp_path):
    def obj(path, radius=2.0, visible=(1, 1, 1)):
        return {"centroid": path, "visibility": list(visible), "radius_px": radius}

    _meta(tmp_path, {
        "0": obj([(0.10, 0.10), (0.14, 0.10), (0.18, 0.10)]),                # moves right, cell (0, 0)
        "1": obj([(0.60, 0.60), (0.60, 0.60), (0.60, 0.60)]),                # still, cell (2, 2)
        "2": obj([(0.90, 0.10), (0.90, 0.10), (0.90, 0.10)], visible=(1, 0, 1)),   # hidden once: ignored
    })
    targets = SynthMotionCells(tmp_path, 4)("v", [0, 1, 2])
    assert targets.shape == (4, 4, 5)
    assert np.allclose(targets[0, 0, :4], [0.04 * 16, 0.0, 0.04 * 16, 0.0]) and targets[0, 0, 4] == 1.0
    assert np.allclose(targets[2, 2, :4], 0.0) and targets[2, 2, 4] == 1.0
    assert targets[0, 3, 4] == 0.0                     # the hidden one's cell: unknown, not "still"
    assert targets[3, 0, 4] == pytest.approx(0.2) and np.allclose(targets[3, 0, :4], 0.0)   # background
    with pytest.raises(ValueError, match="at least 2 context frames"):
        SynthMotionCells(tmp_path, 4)("v", [0])
    with pytest.raises(FileNotFoundError, match=r"synth_meta\.json"):
        SynthMotionCells(tmp_path / "missing", 4)


def test_motion_loss_weighs_cells_and_reads_the_first_channels():
    targets = torch.zeros(1, 2, 2, 3)
    targets[0, 0, 0] = torch.tensor([1.0, -1.0, 1.0])      # a moving object, weight 1
    targets[0, 1, 1, 2] = 0.5                               # still background, weight 0.5
    exact = torch.zeros(1, 4, 5)
    exact[0, 0, :2] = torch.tensor([1.0, -1.0])
    exact[0, 0, 2:] = 9.0                                   # channels past the targets are free
    exact[0, 2, :2] = 9.0                                   # an ignored cell (weight 0)
    assert float(motion_cell_loss(exact, targets)) == 0.0
    still = torch.zeros(1, 4, 5)                            # says nothing moves: wrong on the object cell only
    assert float(motion_cell_loss(still, targets)) == pytest.approx(2 * 0.5 / 1.5)
    with pytest.raises(ValueError, match="has 1 channels, the targets need 2"):
        motion_cell_loss(torch.zeros(1, 4, 1), targets)


def test_dataset_carries_motion_targets_and_the_training_step_learns_them(tmp_path):
    write_split(tmp_path, "train", 2, seed=3)
    labeler = SynthMotionCells(tmp_path / "train", 4)
    ds = ReferringClipDataset(MevisDataset(tmp_path, "train"), "synth", 4, 4, seed=0, motion_cells=labeler)
    sample = ds[0]
    assert np.array_equal(sample.motion_cells, labeler(sample.video, sample.context_idx))
    assert collate_clips([ds[0], ds[1]], 64, 128)["motion_cells"].shape == (2, 4, 4, 7)
    model = _motion_tiny().train()
    batch = synthetic_batch(model)
    vid = [labeler(v, [1, 5, 9, 13]) for v in list(labeler.videos)[:1]] * batch["query_clip"].shape[0]
    batch["motion_cells"] = torch.from_numpy(np.stack(vid))
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(15):
        losses = forward_clips(model, batch, grounding=(0.0, 0.0, 0.0, 0.0, 1.0))
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append(float(losses["motion"].detach()))
    assert history[-1] < 0.5 * history[0]
    assert "motion" not in forward_clips(model, {**batch, "motion_cells": None}, grounding=(0.0, 0.0, 0.0, 0.0, 1.0))
    torch.manual_seed(0)
    plain = GLUSModel.from_config("tiny", overrides={"vlm": {"grounding_map": True}}).train()
    with pytest.raises(ValueError, match=r"needs vlm\.grounding_motion"):
        forward_clips(plain, batch, grounding=(0.0, 0.0, 0.0, 0.0, 1.0))
