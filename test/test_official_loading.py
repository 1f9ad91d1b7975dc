"""Loading the released GLUS layout (the official fixture's files), the official switches and their errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from glus_ros.cli import main
from glus_ros.core.frames import FrameEncoder
from glus_ros.core.loop import LoopTrace, WindowLoop
from glus_ros.inference import load_model
from glus_ros.model.checkpoints import CheckpointError, map_glus_keys
from glus_ros.model.config import load_config, read_yaml_mapping, resolve_config_path
from glus_ros.model.llama_tokenizer import LlamaSentencePieceTokenizer
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.official_prompt import IMAGE_PLACEHOLDER, OfficialConversation, official_expression
from glus_ros.sampling import official_context_frames
from glus_ros.video_io import read_video

FIXTURE = Path(__file__).parent / "fixtures" / "glus_official" / "a"
TRAINED = FIXTURE.parent / "c"  # every parameter trained-like; official_load_report.json from transformers 4.31


def overrides(extra: dict | None = None) -> dict:
    raw = read_yaml_mapping(FIXTURE / "glus_override.yaml")
    for key, value in (extra or {}).items():
        raw.setdefault(key, {}).update(value)
    return raw


def load(checkpoint=FIXTURE / "checkpoint", vision_tower=FIXTURE / "clip", extra=None, **kw):
    return load_model("glus-s", checkpoint, vision_tower=vision_tower, overrides=overrides(extra), **kw)


@pytest.fixture(scope="module")
def model():
    return load()


def test_tokenizer_is_the_release_vocabulary_with_nothing_added():
    tok = LlamaSentencePieceTokenizer(FIXTURE / "checkpoint")
    added = json.loads((FIXTURE / "checkpoint" / "added_tokens.json").read_text())
    assert tok.added_tokens == added and len(tok) == max(added.values()) + 1
    assert json.loads((FIXTURE / "checkpoint" / "config.json").read_text())["vocab_size"] == len(tok)
    assert tok.convert_tokens_to_ids("[SEG]") == added["[SEG]"]
    # whitespace around an added token is eaten (transformers 4.31): "is [SEG] ." == "is[SEG]."
    assert tok("is [SEG] .").input_ids == tok("is[SEG].").input_ids
    assert tok("a</s> b").input_ids != tok("a</s>b").input_ids  # not around </s>
    assert tok("x").input_ids[0] == tok.bos_token_id and tok("x", add_special_tokens=False).input_ids[0] != 1


def test_conversation_ids_hold_one_placeholder_per_frame_and_normalise_the_expression():
    tok = LlamaSentencePieceTokenizer(FIXTURE / "checkpoint")
    conv = OfficialConversation(tok, "The Red ball.")
    assert conv.expression == "the red ball"
    for turns in (1, 2, 4):
        ids = conv.ids(turns)
        assert ids.count(IMAGE_PLACEHOLDER) == 4 + turns
        assert ids.count(conv.seg_id) == turns - 1  # earlier answers keep their [SEG]
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert official_expression("a  Dog. ") == "a  dog. "  # only a final "." goes; spacing is kept
    for bad in ("", "   ", "the <im_start> dog", "the [SEG] dog"):
        with pytest.raises(ValueError):
            official_expression(bad)


@pytest.mark.parametrize(("frames", "expected"), [
    (12, [1, 4, 7, 10]), (16, [2, 6, 10, 14]), (13, [2, 5, 8, 11]), (100, [12, 37, 62, 87]), (3, [2, 0, 1, 2]),
    (5, [0, 1, 2, 4]),
])
def test_official_context_frame_formula(frames, expected):
    # start_j + ceil(N/4)//2, at most the segment's last frame (linspace(0, N, 5) as ints); N < 4 wraps to -1
    assert official_context_frames(frames) == expected


def test_memory_bank_skip_leaves_a_gap_the_next_read_does_not_find():
    bank = MemoryBank(7, 3)
    feats = torch.zeros(1, 2, 2, 2)
    bank.add(feats, feats)
    bank.skip()
    assert bank.next_step == 2 and [(t_rel, e.step) for t_rel, e in bank.read()] == [(2, 0)]


def test_release_loads_every_tensor_in_fp32_or_bf16(model):
    ckpt = {}
    index = json.loads((FIXTURE / "checkpoint" / "pytorch_model.bin.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        ckpt.update(torch.load(FIXTURE / "checkpoint" / shard, weights_only=True))
    state = model.state_dict()
    assert torch.equal(state["seg_projection.2.weight"], ckpt["model.text_hidden_fcs.0.2.weight"].float())
    assert torch.equal(state["vlm.llava.lm_head.weight"], ckpt["lm_head.weight"].float())
    assert torch.equal(state["sam.sam.no_mem_embed"], ckpt["model.visual_model.no_mem_embed"].float())
    clip = torch.load(FIXTURE / "clip" / "pytorch_model.bin", weights_only=True)
    assert torch.equal(state["vlm.llava.model.vision_tower.post_layernorm.weight"],
                       clip["vision_model.post_layernorm.weight"])
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    bf16 = load(dtype="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    frames, _, _ = read_video(FIXTURE / "frames")
    result = WindowLoop(bf16).segment(frames[:6], "the red ball")  # runs end to end in bf16
    assert result.masks.shape == (6, *frames[0].shape[:2])


def test_the_official_switches_each_change_the_result(model):
    """glus-s.yaml's values are the official ones: flipping any of them breaks parity with the fixture."""
    frames, _, _ = read_video(FIXTURE / "frames")
    expected = json.loads((FIXTURE / "expected_start0.json").read_text())
    tensors = load_file(str(FIXTURE / "expected_start0.safetensors"))

    def deviation() -> float:
        trace = LoopTrace()
        WindowLoop(model).segment(frames, expected["expression"], 0, trace=trace)
        worst = 0.0
        for i, (ours, theirs) in enumerate(zip(trace.steps, expected["passes"][0]["steps"], strict=True)):
            if ours.token != theirs["generated"]:
                return float("inf")
            if theirs["seg"]:
                worst = max(worst, float((ours.low_res - tensors[f"p0.s{i}.low_res"]).abs().max()),
                            float((ours.mem_feat - tensors[f"p0.s{i}.mem_feat"]).abs().max()))
        return worst

    assert deviation() < 1e-4
    head, decoder = model.sam, model.sam.sam.sam_mask_decoder
    for obj, attr, value in [(head, "temporal_pos_enc", True), (head, "encoder_input", "frame"),
                             (head, "pad_point", True), (decoder, "dynamic_multimask_via_stability", False)]:
        old = getattr(obj, attr)
        setattr(obj, attr, value)
        try:
            assert deviation() > 1e-4, f"{attr}={value!r} should differ from the official code"
        finally:
            setattr(obj, attr, old)
    official_tokens = tensors["tokens.f1"]

    def tokens_of_frame_1() -> torch.Tensor:
        return FrameEncoder(model, frames).frame_tokens([1])[0]

    for attr, value in [("token_pool_layout", "square"), ("clip_preprocess", "square")]:
        old = getattr(model.cfg.vlm, attr)
        setattr(model.cfg.vlm, attr, value)
        try:
            assert (tokens_of_frame_1() - official_tokens).abs().max() > 1e-4, attr
        finally:
            setattr(model.cfg.vlm, attr, old)
    assert (tokens_of_frame_1() - official_tokens).abs().max() < 1e-4


def broken_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "release"
    shutil.copytree(FIXTURE / "checkpoint", dest)
    return dest


def test_missing_and_misshapen_keys_are_one_error_naming_file_and_keys(tmp_path):
    dest = broken_copy(tmp_path)
    weight_map = json.loads((dest / "pytorch_model.bin.index.json").read_text())["weight_map"]
    removed = next(k for k in weight_map if k.startswith("model.text_hidden_fcs"))
    shard = dest / weight_map[removed]
    state = torch.load(shard, weights_only=True)
    reshaped = next(k for k in state if k != removed and state[k].dim() == 2)
    del state[removed]
    state[reshaped] = torch.zeros(3, 3)
    torch.save(state, shard)
    with pytest.raises(CheckpointError) as err:
        load(dest)
    text = str(err.value)
    ours = "seg_projection." + removed.split("text_hidden_fcs.0.")[1]
    assert str(dest) in text and "missing 1" in text and ours in text
    assert "shape mismatch 1" in text and shard.name in text and "(3, 3)" in text


def test_vision_tower_errors(tmp_path):
    with pytest.raises(ValueError, match="--vision-tower"):
        load(vision_tower=None)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load(vision_tower=tmp_path / "nowhere")
    clip = tmp_path / "clip"
    shutil.copytree(FIXTURE / "clip", clip)
    weights = torch.load(clip / "pytorch_model.bin", weights_only=True)
    gone = "vision_model.post_layernorm.bias"
    del weights[gone]
    torch.save(weights, clip / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"in the vision tower folder.*post_layernorm\.bias"):
        load(vision_tower=clip)
    config = json.loads((clip / "config.json").read_text())
    config["num_hidden_layers"] = 5
    (clip / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"clip/config.json.*num_hidden_layers 5"):
        load(vision_tower=clip)


def test_config_and_vocabulary_mismatches_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"config.json: does not match.*hidden_size 64.*: 96"):
        load(extra={"vlm": {"text": {**overrides()["vlm"]["text"], "hidden_size": 96}}})
    dest = broken_copy(tmp_path)
    added = json.loads((dest / "added_tokens.json").read_text())
    del added["[SEG]"]
    (dest / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(CheckpointError, match="vocab_size 404 but the tokenizer files"):
        load(dest)
    with pytest.raises(ValueError, match="--checkpoint DIR"):
        load_model("glus-s", None, vision_tower=FIXTURE / "clip", overrides=overrides())
    corrupt = broken_copy(tmp_path / "c")
    (corrupt / "pytorch_model-00002-of-00002.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"pytorch_model-00002-of-00002\.bin: cannot read"):
        load(corrupt)


def test_cli_bad_release_is_one_line_and_exit_code_2(tmp_path, capsys):
    frames = FIXTURE / "frames"
    args = ["segment", "--model", "glus-s", "--video", str(frames), "--expr", "the ball", "--out", str(tmp_path / "o"),
            "--checkpoint", str(FIXTURE / "checkpoint"), "--model-override", str(FIXTURE / "glus_override.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--vision-tower" in err
    assert main([*args[:-2], "--model-override", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml does not exist" in capsys.readouterr().err
    assert main(["segment", "--video", str(frames), "--expr", "x", "--out", str(tmp_path / "p"),
                 "--vision-tower", str(FIXTURE / "clip")]) == 2  # the default model has its own tower
    assert "released GLUS weights" in capsys.readouterr().err


def test_glus_a_is_glus_s_but_for_its_name():
    def body(name: str) -> dict:
        raw = yaml.safe_load(resolve_config_path(name).read_text())
        raw.pop("name")
        return raw
    assert body("glus-a") == body("glus-s")
    assert load_config("glus-a").official is not None and load_config("glus-a").name == "glus-a"


@pytest.mark.parametrize(("section", "values", "match"), [
    ({"vlm": {"token_pool_layout": "diagonal"}}, None, "token_pool_layout"),
    ({"vlm": {"clip_preprocess": "bilinear"}}, None, "clip_preprocess"),
    ({"memory": {"encoder_input": "both"}}, None, "encoder_input"),
    ({"official": {"conversation": "llava_llama_2"}}, None, "only llava_v1"),
    ({"sampling": {"num_context": 2}}, None, "4 context frames"),
])
def test_bad_switch_values_are_refused(section, values, match):
    with pytest.raises(ValueError, match=match):
        load_config("glus-s", section)


def test_tiny_default_keeps_its_own_choices():
    cfg = load_config("tiny")
    assert cfg.official is None and cfg.vlm.token_pool_layout == "square" and cfg.vlm.clip_preprocess == "square"
    assert cfg.memory.temporal_pos_enc and cfg.memory.encoder_input == "frame" and cfg.decoder.pad_point
    np.testing.assert_equal(cfg.vlm.tokens_per_frame, (cfg.vlm.patches_per_side // 2) ** 2)


def test_a_sam2_pt_is_still_accepted_and_the_release_sam_weights_win(model, tmp_path):
    state = {k.removeprefix("sam.sam."): v.clone() for k, v in model.state_dict().items() if k.startswith("sam.sam.")}
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    state["no_obj_embed_spatial"] = torch.zeros(1, 16)  # SAM 2.1 files carry it; the 2.0 head has no such tensor
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    other = load(sam2_checkpoint=path)
    mine, theirs = model.state_dict(), other.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_glus_ros_only_paths_say_they_do_not_apply(model):
    from glus_ros.inference import VideoSegmenter

    frames, _, _ = read_video(FIXTURE / "frames")
    with pytest.raises(ValueError, match="key-frame selector"):
        VideoSegmenter(model).segment(frames[:2], "the ball", key_frame=True)
    embeds = torch.zeros(1, 4, 64, 64)
    with pytest.raises(ValueError, match="official GLUS conversation"):
        model.seg_prompts(embeds, embeds, ["the ball"])


def load_trained(load_weights: str | None = None):
    raw = read_yaml_mapping(TRAINED / "glus_override.yaml")
    if load_weights is not None:
        raw["official"] = {"load_weights": load_weights}
    return load_model("glus-s", TRAINED / "checkpoint", vision_tower=TRAINED / "clip", overrides=raw)


def ours(keys) -> set[str]:
    return set(map_glus_keys(dict.fromkeys(keys))[0])


def test_the_loader_leaves_exactly_what_the_official_loader_leaves():
    """transformers 4.31 renames stored 'gamma' keys to 'weight': SAM 2's fuser layer scales are reported missing
    (their stored values under an unexpected '.weight' name) and keep the constructor's 1e-6. Tensor by tensor,
    glus_ros holds what the official model held after loading."""
    official = json.loads((TRAINED / "official_load_report.json").read_text())
    info = official["loading_info"]
    assert info["missing_keys"] == official["release_keys_not_loaded"] and not info["mismatched_keys"]
    assert all(k.endswith("gamma") for k in info["missing_keys"]) and len(info["missing_keys"]) == 2
    model = load_trained()
    report = model.load_report
    assert set(report.initial) == ours(info["missing_keys"])
    assert ours(info["unexpected_keys"]) <= set(report.unexpected)
    assert not ours(info["missing_keys"]) & set(report.loaded)
    release = {}
    for shard in sorted((TRAINED / "checkpoint").glob("*.safetensors")):
        release.update(load_file(str(shard)))
    state = model.state_dict()
    compared = 0
    for key, value in release.items():
        name = next(iter(ours([key])), None)
        if name not in state:
            continue
        expected = torch.tensor(official["not_loaded_values"][key]) if key in info["missing_keys"] else value
        assert torch.equal(state[name], expected.to(state[name].dtype)), key
        compared += 1
    assert compared == len(report.loaded) + len(report.initial) - sum(k.startswith("vlm.llava.model.vision_tower.")
                                                                      for k in report.loaded)

    stored = load_trained("as_stored")  # the switch: every tensor as the release stores it
    assert stored.load_report.initial == []
    for key in info["missing_keys"]:
        name = next(iter(ours([key])))
        assert torch.equal(stored.state_dict()[name], release[key])
    with pytest.raises(ValueError, match="load_weights"):
        load_config("glus-s", {"official": {"load_weights": "transformers"}})
    assert load_config("glus-s").official.load_weights == "official_loader"
