"""Per-cell colour / shape supervision of the visual tokens (training/aux_heads.py: SynthCellLabels, cells)."""

import json

import numpy as np
import pytest
import torch

from glus_ros.data.synth import write_split
from glus_ros.datasets.base import Expression
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.model.glus import GLUSModel
from glus_ros.model.grounding_map import grid_targets
from glus_ros.training.aux_heads import COLOUR_NAMES, IGNORE, AuxHeads, SynthCellLabels, SynthReferenceCells
from glus_ros.training.data import ReferringClipDataset, collate_clips
from glus_ros.training.step import forward_clips

from helpers_model import synthetic_batch


def _meta(split_dir, objects, size=(100, 100)):
    (split_dir / "synth_meta.json").write_text(json.dumps({"videos": {"v": {"size": list(size), "objects": objects}}}))


def _obj(colour, shape, centre, radius=5.0, visible=1.0):
    return {"colour": colour, "shape": shape, "centroid": [centre], "visibility": [visible], "radius_px": radius}


def test_cells_get_the_class_of_the_one_centre_they_hold(tmp_path):
    _meta(tmp_path, {
        "0": _obj("red", "circle", (0.1, 0.1)),          # cell (0, 0)
        "1": _obj("blue", "triangle", (0.6, 0.9)),       # cell (3, 2)
        "2": _obj("green", "square", (0.65, 0.85)),      # also cell (3, 2): two centres -> ignored
        "3": _obj("yellow", "square", (0.9, 0.1), visible=0.0),   # hidden: its cell is background
        "4": _obj("red", "square", (0.5, 0.5), radius=20.0),      # centre in (2, 2), disc reaches (1, 1)..(2, 2)
    })
    labels = SynthCellLabels(tmp_path, 4)("v", [0])
    colour, shape = labels[0, ..., 0], labels[0, ..., 1]
    assert colour[0, 0] == COLOUR_NAMES.index("red") and shape[0, 0] == 0
    assert colour[3, 2] == IGNORE and shape[3, 2] == IGNORE
    assert colour[0, 3] == len(COLOUR_NAMES) and shape[0, 3] == 3          # background, not the hidden object
    assert colour[2, 2] == COLOUR_NAMES.index("red") and shape[2, 2] == 1  # the big square's centre
    assert colour[1, 1] == IGNORE and colour[1, 2] == IGNORE               # its disc, without its centre
    assert colour[0, 1] == len(COLOUR_NAMES)                               # nothing there
    with pytest.raises(FileNotFoundError, match=r"synth_meta\.json"):
        SynthCellLabels(tmp_path / "missing", 4)


def test_dataset_samples_carry_cell_labels_of_their_frames(tmp_path):
    write_split(tmp_path, "train", 2, seed=3)
    reader = MevisDataset(tmp_path, "train")
    labeler = SynthCellLabels(tmp_path / "train", 4)
    ds = ReferringClipDataset(reader, "synth", 4, 4, seed=0, cell_labels=labeler)
    sample = ds[0]
    assert sample.cell_labels.shape == (8, 4, 4, 2)
    assert np.array_equal(sample.cell_labels, labeler(sample.video, sample.context_idx + sample.query_idx))
    batch = collate_clips([ds[0], ds[1]], 64, 128)
    assert batch["cell_labels"].shape == (2, 8, 4, 4, 2) and batch["cell_labels"].dtype == torch.long
    assert collate_clips([ReferringClipDataset(reader, "synth", 4, 4)[0]], 64, 128)["cell_labels"] is None


def test_cell_term_trains_the_visual_tokens_and_needs_labels():
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny").train()
    batch = synthetic_batch(model)
    side = round(model.cfg.vlm.tokens_per_frame**0.5)
    rows, cols = np.mgrid[:side, :side]
    pattern = np.stack([cols % 4, rows % 3], axis=-1)          # learnable from where a token sits
    cells = np.broadcast_to(pattern, (2, 8, side, side, 2)).copy()
    batch["cell_labels"] = torch.from_numpy(cells)
    batch["attributes"] = torch.full((2, 2), IGNORE)
    heads = AuxHeads(model.vlm.hidden_size, cells=True)
    params = [p for p in model.parameters() if p.requires_grad] + list(heads.parameters())
    optim = torch.optim.Adam(params, lr=1e-3)
    history = []
    for _ in range(30):
        losses = forward_clips(model, batch, aux_heads=heads, aux_weights=(0.0, 0.0, 1.0))
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append(float(losses["aux_cells"].detach()))
    assert history[-1] < 0.85 * history[0]
    # the term reaches the vision tower through the tokens the LLM reads
    model.zero_grad()
    heads.cell_losses(model.encode_clip_frames(batch["query_clip"].flatten(0, 1)).unflatten(0, (2, 4)),
                      batch["cell_labels"][:, 4:]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vlm.projector.parameters())
    assert model.vlm.vision_tower.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    del batch["cell_labels"]
    with pytest.raises(ValueError, match="cell labels"):
        forward_clips(model, batch, aux_heads=heads, aux_weights=(0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="no cell head"):
        AuxHeads(8).cell_losses(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 2, 2, 2, dtype=torch.long))


def test_offset_bins_say_where_in_its_cell_the_centre_lies(tmp_path):
    _meta(tmp_path, {
        "0": _obj("red", "circle", (0.05, 0.20)),     # cell (0, 0): x 0.2 of the cell, y 0.8
        "1": _obj("blue", "square", (0.74, 0.26)),    # cell (1, 2): x 0.96, y 0.04
        "2": _obj("green", "circle", (0.6, 0.9)),     # cell (3, 2), alone
        "3": _obj("green", "square", (0.65, 0.85)),   # same cell: both ignored
    })
    plain = SynthCellLabels(tmp_path, 4)("v", [0])
    labels = SynthCellLabels(tmp_path, 4, offset_bins=5)("v", [0])
    assert labels.shape == (1, 4, 4, 4)
    assert np.array_equal(labels[..., :2], plain)                 # the classes are unchanged
    assert tuple(labels[0, 0, 0, 2:]) == (1, 4)
    assert tuple(labels[0, 1, 2, 2:]) == (4, 0)
    assert (labels[0, 3, 2] == IGNORE).all()
    assert labels[0, 2, 0, 0] == len(COLOUR_NAMES) and (labels[0, 2, 0, 2:] == IGNORE).all()  # background: no offset
    with pytest.raises(ValueError, match="offset_bins"):
        SynthCellLabels(tmp_path, 4, offset_bins=-1)


def test_offset_head_learns_the_bins_and_rejects_labels_without_them():
    torch.manual_seed(0)
    heads = AuxHeads(8, cells=True, offset_bins=4)
    tokens = torch.randn(1, 1, 16, 8)
    labels = torch.full((1, 1, 4, 4, 4), IGNORE)
    labels[0, 0, 1, 1] = torch.tensor([0, 0, 3, 1])                # one object cell, its centre bins (3, 1)
    optim = torch.optim.Adam(heads.parameters(), lr=0.05)
    first = float(heads.cell_losses(tokens, labels).detach())
    for _ in range(50):
        loss = heads.cell_losses(tokens, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert float(loss.detach()) < 0.1 * first
    parts = heads.cell_parts(heads.cells(tokens[0, 0, 5:6]))
    assert [int(p.argmax()) for p, _ in parts[2:]] == [3, 1]
    with pytest.raises(ValueError, match="4"):
        heads.cell_losses(tokens, labels[..., :2])
    with pytest.raises(ValueError, match="cell head"):
        AuxHeads(8, offset_bins=4)


def test_reference_cells_cover_the_reference_object_of_relation_expressions(tmp_path):
    write_split(tmp_path, "train", 6, seed=5)
    reader = MevisDataset(tmp_path, "train")
    refs = SynthReferenceCells(tmp_path / "train", 4)
    meta = json.loads((tmp_path / "train" / "synth_meta.json").read_text())["videos"]
    relations = [e for e in reader.expressions() if refs.reference(e) is not None]
    others = [e for e in reader.expressions() if refs.reference(e) is None]
    assert relations and others
    agreement = []
    for e in relations:
        entry = meta[e.video]["expressions"][e.exp_id]
        assert entry["kind"] == "relation" and f"ref:{refs.reference(e)}" in entry["tags"]
        frames = list(range(len(reader.frames(e.video))))
        cells = refs(e, frames)
        obj = meta[e.video]["objects"][str(refs.reference(e))]
        track = reader.gt_masks(Expression(e.video, "ref", "", (refs.reference(e),), (str(obj["anno_id"]),)))
        truth = grid_targets(torch.from_numpy(track).float(), 4).numpy()
        agreement.append(float(((cells > 0) == (truth > 0)).mean()))
        assert e.obj_ids != (refs.reference(e),)                     # the reference is not the target
    assert np.mean(agreement) > 0.9                                   # discs vs rendered masks (occluders differ)
    assert not refs(others[0], [0, 1]).any()
    question = Expression(relations[0].video, "q0", "how many circles are there?", (0,))
    assert not refs(question, [0]).any()                             # counting questions: no reference
    ds = ReferringClipDataset(reader, "synth", 4, 4, seed=0, reference_cells=refs)
    i = reader.expressions().index(relations[0])
    sample = ds[i]
    assert np.array_equal(sample.reference_cells, refs(relations[0], sample.query_idx))
    batch = collate_clips([sample, ds[reader.expressions().index(others[0])]], 64, 128)
    assert batch["reference_cells"].shape == (2, 4, 4, 4) and not batch["reference_cells"][1].any()
    assert collate_clips([ReferringClipDataset(reader, "synth", 4, 4)[0]], 64, 128)["reference_cells"] is None
    with pytest.raises(FileNotFoundError, match=r"synth_meta\.json"):
        SynthReferenceCells(tmp_path / "missing", 4)
