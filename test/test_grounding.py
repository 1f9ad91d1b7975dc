"""Grounded answers (GLaMM) and several objects per request: parsing, prompts, generation, tracks, training, CLI."""

from __future__ import annotations

import copy
import json
import random
import re

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from glus_ros.cli import main
from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import write_split
from glus_ros.grounding import GroundedSegmenter
from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.prompting import parse_answer
from glus_ros.model.region import Region
from glus_ros.model.transforms import clip_input, to_tensor
from glus_ros.training.data import GroundedClipDataset, collate_grounded
from glus_ros.training.step import forward_grounded

from helpers_model import moving_disk_clip, tiny_model

TWO = "<p>the red circle</p> [SEG] moves right and <p>the dark noise</p> [SEG] stays."


@pytest.fixture(scope="module")
def tok():
    return tiny_model().tokenizer


def _parse(text: str, tok):
    return parse_answer(tok(text, add_special_tokens=False).input_ids, tok)


def test_parse_well_formed_answer(tok):
    parsed = _parse("We see <p>two red circles</p> [SEG], and <p>a green square</p> [SEG] that stays still.", tok)
    assert parsed.text == "We see two red circles, and a green square that stays still."
    assert [(p.text, p.seg_index) for p in parsed.phrases] == [("two red circles", 0), ("a green square", 1)]
    assert all(parsed.text[p.start:p.end] == p.text for p in parsed.phrases)
    assert parsed.num_seg == 2 and parsed.issues == []
    assert parsed.marked() == "We see <p>two red circles</p> [SEG], and <p>a green square</p> [SEG] that stays still."


@pytest.mark.parametrize(("text", "plain", "phrases", "issue"), [
    # [SEG] without a phrase (LISA style): an empty phrase there, still a mask
    ("it is [SEG].", "it is.", [("", None, 0)], "follows no phrase"),
    # phrase without [SEG]: in the text, no mask
    ("<p>a cup</p> is here", "a cup is here", [("a cup", None, None)], "has no [SEG]"),
    # text between the phrase and its [SEG]: the [SEG] does not bind
    ("<p>a cup</p> is here [SEG]", "a cup is here", [("a cup", None, None), ("", None, 0)], "follows no phrase"),
    # closing marker without opening: dropped
    ("a </p> <p>cup</p> [SEG]", "a cup", [("cup", None, 0)], "without <p>"),
    # opening inside an open phrase closes the first
    ("<p>a <p>b</p> [SEG]", "a b", [("a", None, None), ("b", None, 0)], "inside an open phrase"),
    # [SEG] inside an open phrase closes and grounds it
    ("<p>a red cup [SEG] and more", "a red cup and more", [("a red cup", None, 0)], "inside an open phrase"),
    # phrase still open at the end
    ("look: <p>the spoon", "look: the spoon", [("the spoon", None, None)], "still open"),
    # empty phrase dropped, its [SEG] still grounds (empty) text
    ("<p></p> [SEG]", "", [("", None, 0)], "empty phrase"),
    # two [SEG] after one phrase: the second has none
    ("<p>x</p> [SEG] [SEG]", "x", [("x", None, 0), ("", None, 1)], "follows no phrase"),
    # tokens after </s> are ignored; other special tokens skipped
    ("<p>x</p> [SEG]</s><p>y</p> [SEG]", "x", [("x", None, 0)], None),
    ("a <image> <region> b", "a b", [], "skipped"),
])
def test_parse_malformed_answers_never_fail(text, plain, phrases, issue, tok):
    parsed = _parse(text, tok)
    assert parsed.text == plain
    assert [(p.text, None, p.seg_index) for p in parsed.phrases] == phrases
    assert all(parsed.text[p.start:p.end] == p.text and 0 <= p.start <= p.end <= len(parsed.text)
               for p in parsed.phrases)
    if issue is None:
        assert parsed.issues == []
    else:
        assert any(issue in i for i in parsed.issues), parsed.issues
    assert sorted(p.seg_index for p in parsed.grounded) == list(range(parsed.num_seg))


def test_parse_random_token_soup(tok):
    """Whatever a model emits, parsing returns consistent spans and one grounded phrase per [SEG]."""
    rng = random.Random(0)
    markers = tok.convert_tokens_to_ids(["<p>", "</p>", "[SEG]", "</s>", "<image>"])
    for _ in range(300):
        ids = [rng.choice(markers) if rng.random() < 0.4 else rng.randrange(len(tok))
               for _ in range(rng.randint(0, 30))]
        parsed = parse_answer(ids, tok)
        assert all(parsed.text[p.start:p.end] == p.text for p in parsed.phrases)
        assert [p.seg_index for p in parsed.grounded] == list(range(parsed.num_seg))
        again = _parse(parsed.marked(), tok)  # what we print re-parses to the same grounding (the tokenizer
        assert again.num_seg == parsed.num_seg  # adds a space after each special token: compare without spaces)
        assert again.text.replace(" ", "") == parsed.text.replace(" ", "")


@pytest.fixture(scope="module")
def window():
    model = tiny_model()
    frames = moving_disk_clip(8)
    with torch.no_grad():
        embeds = model.encode_clip_frames(clip_input(to_tensor(frames), model.cfg.vlm.image_size))
    return model, embeds[None, :4], embeds[None, 4:]


def test_default_answer_is_the_referring_path_and_phrases_get_one_prompt_each(window):
    model, ctx, qry = window
    with torch.no_grad():
        ref = model.seg_prompts(ctx, qry, ["the red circle"])
        same = model.grounded_prompts(ctx, qry, "the red circle")
        two = model.grounded_prompts(ctx, qry, "describe the video.", TWO)
        one = model.grounded_prompts(ctx, qry, "describe the video.", "<p>the red circle</p> [SEG]")
    assert torch.equal(ref.prompts[0], same.prompts[0])
    assert two.prompts[0].shape == (2, model.sam.prompt_dim)
    assert [p.text for p in two.answers[0].grounded] == ["the red circle", "the dark noise"]
    # causal LLM: the first phrase's [SEG] sees the same prefix with or without the second phrase
    assert torch.allclose(two.prompts[0][0], one.prompts[0][0], atol=1e-5)
    assert not torch.allclose(two.prompts[0][0], two.prompts[0][1], atol=1e-4)
    # labels supervise the answer tokens only
    assert int((two.labels[0] != -100).sum()) == len(model.tokenizer(TWO, add_special_tokens=False).input_ids) + 1


def test_batched_grounded_prompts_keep_per_sample_counts(window):
    model, ctx, qry = window
    with torch.no_grad():
        out = model.grounded_prompts(ctx.expand(3, -1, -1, -1), qry.expand(3, -1, -1, -1),
                                     ["describe the video.", "what is it?", "describe the video."],
                                     [TWO, "a red circle", "<p>the red circle</p> [SEG]"])
    assert [p.shape[0] for p in out.prompts] == [2, 0, 1]
    assert torch.allclose(out.prompts[0][0], out.prompts[2][0], atol=1e-5)
    with pytest.raises(ValueError, match="may not hold"):
        model.grounded_prompts(ctx, qry, "describe the video.", "<p>x</p> <image>")


def test_generation_is_bounded_and_matches_teacher_forcing(window):
    model, ctx, qry = window
    with torch.no_grad():
        gen = model.generate_answer(ctx, qry, "describe the video.", max_new_tokens=12)
        assert len(gen.token_ids) <= 12 and gen.finished == (len(gen.token_ids) < 12)
        banned = set(model.tokenizer.convert_tokens_to_ids(["<image>", "<region>", "<pad>", "<s>", "[KEY]"]))
        assert not banned & set(gen.token_ids)
        forced = model.grounded_prompts(ctx, qry, "describe the video.", answer_ids=[gen.token_ids])
        answer_pos = (forced.labels[0] != -100).nonzero()[:, 0]
        greedy = forced.logits[0, answer_pos - 1].argmax(dim=-1).tolist()  # what each step would emit
        assert greedy[: len(gen.token_ids)] == gen.token_ids
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate_answer(ctx, qry, "describe the video.", max_new_tokens=0)


def test_generated_seg_states_equal_the_teacher_forced_ones(window):
    """A head that always says [SEG]: every generated [SEG] yields the prompt the forced pass reads."""
    model, ctx, qry = window
    forced_model = copy.deepcopy(model)
    seg = forced_model.prompts.seg_id
    head = nn.Linear(forced_model.vlm.hidden_size, forced_model.vlm.llava.lm_head.out_features, bias=True)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    head.bias.data[seg] = 1.0
    forced_model.vlm.llava.lm_head = head
    with torch.no_grad():
        gen = forced_model.generate_answer(ctx, qry, "what is moving?", max_new_tokens=5)
        forced = forced_model.grounded_prompts(ctx, qry, "what is moving?", answer_ids=[gen.token_ids])
    assert gen.token_ids == [seg] * 5 and not gen.finished
    assert gen.prompts.shape == (5, model.sam.prompt_dim) and len(gen.answer.grounded) == 5
    assert torch.allclose(gen.prompts, forced.prompts[0], atol=1e-4)


def test_two_phrases_are_two_independent_tracks_with_their_own_bounded_memory():
    model = tiny_model()
    frames = moving_disk_clip(22)
    segmenter = GroundedSegmenter(model)
    both = segmenter.answer(frames, "describe the video.", answer_text=TWO)
    banks = segmenter.banks
    alone = segmenter.answer(frames, "describe the video.", answer_text="<p>the red circle</p> [SEG]")
    assert both.text == "the red circle moves right and the dark noise stays."
    assert [(p.target_id, p.text) for p in both.phrases] == [("phrase_0", "the red circle"),
                                                             ("phrase_1", "the dark noise")]
    assert set(both.by_target()) == {"phrase_0", "phrase_1"}
    for p in both.phrases:
        assert p.masks.shape == (22, 72, 96) and p.masks.dtype == bool and p.scores.shape == (22,)
        assert both.text[p.start:p.end] == p.text
    # separate banks, each bounded by its capacity however many frames went through
    assert set(banks) == {"phrase_0", "phrase_1"} and banks["phrase_0"] is not banks["phrase_1"]
    for bank in banks.values():
        assert isinstance(bank, MemoryBank) and bank.next_step == 22 and len(bank) == bank.capacity < 22
    # the second object never touched the first one's memory: its track equals the single-object run
    first, solo = both.phrases[0], alone.phrases[0]
    assert np.allclose(first.scores, solo.scores, atol=1e-5)
    assert (first.masks != solo.masks).mean() < 1e-3
    assert not np.allclose(both.phrases[1].scores, first.scores, atol=1e-6)


def test_generated_answer_and_refreshed_prompts_run_end_to_end():
    model = tiny_model()
    frames = moving_disk_clip(7)
    segmenter = GroundedSegmenter(model)
    out = segmenter.answer(frames, "what is <region>?", regions=[Region(5, 20, 40, 52, frame=2)], max_new_tokens=6)
    assert out.start_frame == 2 and isinstance(out.text, str)
    assert len(out.phrases) == len(segmenter.banks)  # random weights: usually no [SEG], never a crash
    refreshed = segmenter.answer(frames, "describe the video.", answer_text=TWO, refresh_prompts=True, start_frame=3)
    assert [p.target_id for p in refreshed.phrases] == ["phrase_0", "phrase_1"]
    with pytest.raises(ValueError, match="holds 1 <region> tokens but 0 regions"):
        segmenter.answer(frames, "what is <region>?")
    with pytest.raises(ValueError, match="on frame 7, the video has 7 frames"):
        segmenter.answer(frames, "what is <region>?", regions=[Region(0, 0, 5, 5, frame=7)])


@pytest.fixture(scope="module")
def split_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounded")
    write_split(root, "train", videos=1, seed=1, config=SynthConfig(frames=8))
    return root


def test_grounded_dataset_samples(split_root):
    ds = GroundedClipDataset(split_root, "train", num_context=2, num_query=3)
    kinds = [ds[i].kind for i in range(len(ds))]
    assert kinds[0] == "caption" and {"caption", "region_what", "region_track"} == set(kinds)
    for i in range(len(ds)):
        s = ds[i]
        assert s.phrase_masks.shape[1:2] == (3,) and s.phrase_masks.dtype == bool
        if s.kind == "caption":
            assert s.phrase_masks.shape[0] == s.answer.count("[SEG]") >= 1 and s.regions == []
        else:
            (region,) = s.regions
            frame = (s.context_idx + s.query_idx)[region.frame]
            truth = ds.grounding[s.video].regions
            assert any(frame == r.frame and (region.x0, region.y0) == r.box[:2] for r in truth)
            assert region.frame >= len(s.context)  # the region's frame is one of the query frames
            assert s.phrase_masks.shape[0] == (1 if s.kind == "region_track" else 0)
            assert (s.answer is None) == (s.kind == "region_track")
    again = GroundedClipDataset(split_root, "train", num_context=2, num_query=3)
    assert all((again[i].context_idx, again[i].query_idx) == (ds[i].context_idx, ds[i].query_idx)
               for i in range(len(ds)))  # a pure function of (seed, epoch, index)
    with pytest.raises(ValueError, match="kinds"):
        GroundedClipDataset(split_root, "train", kinds=("captions",))


def test_grounded_loss_decreases_on_one_batch(split_root):
    torch.manual_seed(0)
    model = GLUSModel.from_config("tiny").train()
    ds = GroundedClipDataset(split_root, "train")
    pick = {}
    for i in range(len(ds)):
        pick.setdefault(ds[i].kind, ds[i])
    batch = collate_grounded(list(pick.values()), model.cfg.vlm.image_size, model.sam.image_size)
    assert [m.shape[0] for m in batch["phrase_masks"]] == [3, 0, 1]
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(10):
        losses = forward_grounded(model, batch)
        optim.zero_grad()
        losses["total"].backward()
        optim.step()
        history.append({k: float(v.detach()) for k, v in losses.items() if v.ndim == 0})
    first, last = history[0], history[-1]
    assert last["total"] < 0.7 * first["total"]
    assert last["ce"] < first["ce"] and last["bce"] < first["bce"] and last["dice"] < first["dice"]


def test_grounded_loss_rejects_mismatched_masks(split_root):
    model = tiny_model()
    ds = GroundedClipDataset(split_root, "train", kinds=("caption",))
    batch = collate_grounded([ds[0]], model.cfg.vlm.image_size, model.sam.image_size)
    batch["phrase_masks"] = [batch["phrase_masks"][0][:1]]
    with torch.no_grad(), pytest.raises(ValueError, match="holds 3 \\[SEG\\] but 1 phrase mask tracks"):
        forward_grounded(model, batch)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    for i, frame in enumerate(moving_disk_clip(5, height=60, width=88)):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_ask_cli_writes_answer_and_masks_per_phrase(clip_dir, tmp_path, capsys):
    out = tmp_path / "ask"
    argv = ["ask", "--video", str(clip_dir), "--question", "what is <region>?", "--region", "5,15,40,45",
            "--region-frame", "1", "--answer", TWO, "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "the red circle moves right and the dark noise stays." in printed
    answer = json.loads((out / "answer.json").read_text())
    assert answer["answer"] == "the red circle moves right and the dark noise stays."
    assert [p["target_id"] for p in answer["phrases"]] == ["phrase_0", "phrase_1"]
    assert answer["regions"] == [{"kind": "box", "frame": 1, "xyxy": [5.0, 15.0, 40.0, 45.0]}]
    assert answer["start_frame"] == 1
    for target in ("phrase_0", "phrase_1"):
        assert len(list((out / target).glob("*.png"))) == 5


@pytest.mark.parametrize(("extra", "match"), [
    (["--question", "what is <region>?"], "holds 1 <region> tokens but 0 --region"),
    (["--question", "what is this?", "--region", "1,1,9,9"], "holds 0 <region> tokens but 1 --region"),
    (["--question", "what is <region>?", "--region", "1,1,99,9"], r"88x60 image.*outside the image"),
    (["--question", "  "], "empty expression"),
    (["--question", "what?", "--answer", "<p>x</p> <image>"], "may not hold"),
])
def test_ask_cli_errors_are_one_clear_line(extra, match, clip_dir, tmp_path, capsys):
    out = tmp_path / "ask"
    assert main(["ask", "--video", str(clip_dir), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glus-ros ask: error:")
    assert re.search(match, err[0]), err[0]
    assert not out.exists()
