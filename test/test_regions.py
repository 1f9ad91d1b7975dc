"""Region prompts (GLaMM's region token): validation, RoI pooling, the region embedding in the LLM, 'track this'."""

from __future__ import annotations

import json
import re

import cv2
import pytest
import torch

from glus_ros.cli import main
from glus_ros.grounding import GroundedSegmenter
from glus_ros.model.prompting import clean_expression, clean_question
from glus_ros.model.region import Region, parse_region, region_input, roi_average
from glus_ros.model.transforms import clip_input, to_tensor

from helpers_model import moving_disk_clip, tiny_model

W, H = 96, 72


@pytest.mark.parametrize(("region", "match"), [
    (Region(10, 10, 10, 40), r"box \(10, 10, 10, 40\).*96x72 image.*zero area"),
    (Region(10, 10, 40, 10), "zero area"),
    (Region(40, 10, 10, 30), r"box \(40, 10, 10, 30\).*x1 < x0"),
    (Region(10, 30, 40, 20), "x1 < x0 or y1 < y0"),
    (Region(-1, 0, 20, 20), r"outside the image \[0, 96\] x \[0, 72\]"),
    (Region(10, 10, 97, 20), "outside the image"),
    (Region(10, 10, 20, 73), "outside the image"),
    (Region(100, 100, 120, 120), "outside the image"),
    (Region.point(96, 10), r"point \(96, 10\).*outside the image"),
    (Region.point(5, -0.5), "outside the image"),
    (Region(float("nan"), 0, 10, 10), "finite"),
    (Region(0, 0, 10, 10, kind="circle"), "kind"),  # type: ignore[arg-type]
])
def test_bad_regions_are_clear_errors(region, match):
    with pytest.raises(ValueError, match=match):
        region.validate(W, H)


def test_good_regions_pass_and_inclusive_boxes_convert():
    assert Region(0, 0, W, H).validate(W, H) == Region(0, 0, W, H)
    Region.point(0, 0).validate(W, H)
    Region.point(95.9, 71.9).validate(W, H)
    assert Region.from_inclusive_box(3, 4, 3, 4, frame=2) == Region(3, 4, 4, 5, frame=2)  # one pixel: area 1


def test_parse_region_text():
    assert parse_region("1,2,30.5,40", frame=3) == Region(1, 2, 30.5, 40, frame=3)
    assert parse_region(" 7 , 8 ") == Region.point(7, 8)
    for bad in ("1,2,3", "a,b,c,d", "", "1;2;3;4"):
        with pytest.raises(ValueError, match="x0,y0,x1,y1"):
            parse_region(bad)


def _index_grid(grid: int = 4) -> torch.Tensor:
    """(1, G, G, G*G): patch (row, col) holds the one-hot of its index row * G + col."""
    return torch.eye(grid * grid).reshape(1, grid, grid, grid * grid)


def test_roi_average_picks_the_patches_under_the_box():
    feats = _index_grid(4)
    # exactly columns 1-2, rows 0-1 of a 4x4 grid: four patches, a quarter each
    out = roi_average(feats, torch.tensor([[0.25, 0.0, 0.75, 0.5]]))[0]
    expected = torch.zeros(16)
    expected[[1, 2, 5, 6]] = 0.25
    assert torch.allclose(out, expected)
    # half of column 0 and all of column 1 in row 3: weights 1/3 and 2/3
    out = roi_average(feats, torch.tensor([[0.125, 0.75, 0.5, 1.0]]))[0]
    expected = torch.zeros(16)
    expected[12], expected[13] = 1 / 3, 2 / 3
    assert torch.allclose(out, expected)
    # a box inside one patch is that patch
    out = roi_average(feats, torch.tensor([[0.8, 0.3, 0.9, 0.4]]))[0]
    assert int(out.argmax()) == 1 * 4 + 3 and float(out.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="covers no patch"):
        roi_average(feats, torch.tensor([[0.5, 0.5, 0.5, 0.9]]))


def test_a_point_region_is_the_patch_under_it():
    grid = 8  # the tiny model's 64 px / 8 px patches
    box = Region.point(50, 20).grid_box(W, H, grid)  # x 50/96*8 = 4.17 -> col 4; y 20/72*8 = 2.2 -> row 2
    assert box == (4 / 8, 2 / 8, 5 / 8, 3 / 8)
    out = roi_average(_index_grid(grid), torch.tensor([box]))[0]
    assert int(out.argmax()) == 2 * grid + 4 and float(out.max()) == pytest.approx(1.0)


def test_region_input_blanks_everything_outside_the_box():
    frame = moving_disk_clip(1, H, W)[0]
    region = Region(20, 10, 50, 40)
    changed = frame.copy()
    changed[:, 60:] = 255 - changed[:, 60:]
    changed[50:] = 0
    a, box = region_input(frame, region, 64, 8)
    b, _ = region_input(changed, region, 64, 8)
    assert torch.equal(a, b)
    assert torch.allclose(box, torch.tensor([20 / W, 10 / H, 50 / W, 40 / H]))
    inside = frame.copy()
    inside[20:30, 25:45] = 0
    assert not torch.equal(a, region_input(inside, region, 64, 8)[0])


def test_questions_may_hold_region_tokens_expressions_may_not():
    assert clean_question("  what is   <region>?") == "what is <region>?"
    with pytest.raises(ValueError, match="reserved token '<region>'"):
        clean_expression("track <region>")
    for bad in ("what is [SEG]", "<image> here", "a <p>phrase</p>"):
        with pytest.raises(ValueError, match="reserved token"):
            clean_question(bad)


@pytest.fixture(scope="module")
def window():
    model = tiny_model()
    frames = moving_disk_clip(8, H, W)
    with torch.no_grad():
        embeds = model.encode_clip_frames(clip_input(to_tensor(frames), model.cfg.vlm.image_size))
    return model, frames, embeds


def test_region_embedding_ignores_pixels_outside_the_box(window):
    model, frames, _ = window
    box = Region(10, 20, 40, 52, frame=1)
    other = [f.copy() for f in frames]
    other[1][:, 45:] = 255  # frame 1 changes outside the box only
    other[1][:15] = 0
    with torch.no_grad():
        a = model.encode_regions(frames, [box])
        b = model.encode_regions(other, [box])
        moved = model.encode_regions(frames, [Region(50, 20, 80, 52, frame=1)])
    assert a.shape == (1, model.vlm.hidden_size)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, moved, atol=1e-3)


def test_region_embedding_reaches_the_llm(window):
    model, frames, embeds = window
    ctx, qry = embeds[None, :4], embeds[None, 4:]
    with torch.no_grad():
        outs = [model.grounded_prompts(ctx, qry, "track <region>",
                                       region_embeds=[model.encode_regions(frames, [r])])
                for r in (Region(5, 20, 35, 52, frame=5), Region(60, 5, 90, 30, frame=5), Region.point(20, 36, 5))]
    assert outs[0].prompts[0].shape == (4, model.sam.prompt_dim)  # the referring answer: one [SEG] per query frame
    for other in outs[1:]:
        assert not torch.allclose(outs[0].prompts[0], other.prompts[0], atol=1e-4)
        assert not torch.allclose(outs[0].logits, other.logits, atol=1e-4)


def test_region_count_and_frame_must_match(window):
    model, frames, embeds = window
    ctx, qry = embeds[None, :4], embeds[None, 4:]
    one = model.encode_regions(frames, [Region(5, 5, 30, 30, frame=0)])
    with torch.no_grad():
        with pytest.raises(ValueError, match="holds 1 <region> tokens but 0 regions"):
            model.grounded_prompts(ctx, qry, "track <region>")
        with pytest.raises(ValueError, match="holds 0 <region> tokens but 1 regions"):
            model.grounded_prompts(ctx, qry, "the red circle", region_embeds=[one])
        with pytest.raises(ValueError, match="holds 2 <region> tokens but 1 regions"):
            model.generate_answer(ctx, qry, "is <region> left of <region>?", region_embeds=one)
        with pytest.raises(ValueError, match=r"on frame 8, but only 8 frames"):
            model.encode_regions(frames, [Region(5, 5, 30, 30, frame=8)])
        with pytest.raises(ValueError, match="zero area"):
            model.encode_regions(frames, [Region(5, 5, 5, 30, frame=0)])


def test_track_this_segments_from_the_region_frame(window):
    model, frames, _ = window
    segmenter = GroundedSegmenter(model)
    seen: list[int] = []
    result = segmenter.segment_region(frames, 3, (5, 20, 40, 52), progress=seen.append)
    assert result.masks.shape == (8, H, W) and result.masks.dtype == bool
    assert result.start_frame == 3 and len(seen) == 8 and result.scores.shape == (8,)
    assert list(segmenter.banks) == ["region"]
    with pytest.raises(ValueError, match="outside the image"):
        segmenter.segment_region(frames, 0, (50, 50, 100, 60))
    with pytest.raises(ValueError, match="on frame 9, the video has 8 frames"):
        segmenter.segment_region(frames, 9, (5, 5, 20, 20))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    for i, frame in enumerate(moving_disk_clip(6, height=60, width=88)):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_segment_cli_tracks_a_region(clip_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["segment", "--video", str(clip_dir), "--region", "5,15,40,45", "--region-frame", "2", "--out", str(out),
            "--no-overlay"]
    assert main(argv) == 0
    assert len(list(out.glob("*.png"))) == 6
    summary = json.loads((out / "result.json").read_text())
    assert summary["expression"] == "track <region>" and summary["start_frame"] == 2
    assert summary["region"] == {"kind": "box", "frame": 2, "xyxy": [5.0, 15.0, 40.0, 45.0]}


@pytest.mark.parametrize(("extra", "match"), [
    (["--region", "5,15,100,45"], r"box \(5, 15, 100, 45\) on frame 0 of a 88x60 image.*outside the image"),
    (["--region", "5,15,5,45"], "zero area"),
    (["--region", "30,15,5,45"], "x1 < x0"),
    (["--region", "5,15,40"], "x0,y0,x1,y1"),
    (["--region", "5,15,40,45", "--region-frame", "6"], "on frame 6, the video has 6 frames"),
    (["--region", "5,15,40,45", "--expr", "the red circle"], "not both"),
    ([], r"give --expr .* or --region"),
])
def test_segment_cli_region_errors_are_one_clear_line(extra, match, clip_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", "--video", str(clip_dir), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glus-ros segment: error:")
    assert re.search(match, err[0]), err[0]
    assert not out.exists() or not any(out.iterdir())
