"""Loading official checkpoint layouts (SAM 2 .pt, GLUS/LISA shards) and our own model directories.

The tests write small checkpoints in exactly the official layouts from a second, differently
initialised tiny model, load them, and check that the weights (and outputs) arrive.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from glus_ros.inference import VideoSegmenter, load_model
from glus_ros.model.checkpoints import (
    CheckpointError,
    load_glus_checkpoint,
    load_model_dir_weights,
    load_sam2_checkpoint,
    resize_patch_embeddings,
    save_model_dir,
)
from glus_ros.model.config import load_config
from glus_ros.model.glus import GLUSModel
from glus_ros.model.tokenizer import build_builtin_tokenizer

from helpers_model import moving_disk_clip

# our module prefix -> the official GLUSForCausalLM prefix (the inverse of the loader's map)
OFFICIAL = [
    ("sam.sam.", "model.visual_model."),
    ("seg_projection.", "model.text_hidden_fcs.0."),
    ("vlm.llava.model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("vlm.llava.model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("vlm.llava.model.multi_modal_projector.", "model.mm_projector."),
    ("vlm.llava.model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("vlm.llava.model.language_model.", "model."),
    ("vlm.llava.lm_head.", "lm_head."),
]


def official_state(model: GLUSModel) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        for ours, theirs in OFFICIAL:
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = value.clone()
                break
        else:
            raise AssertionError(f"no official name for {key}")
    return out


def fresh(seed: int, cfg=None) -> GLUSModel:
    torch.manual_seed(seed)
    return GLUSModel(cfg or load_config("tiny"), build_builtin_tokenizer())


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sam2_official_pt_layout_loads(tmp_path):
    source, target = fresh(1), fresh(2)
    assert not same_weights(source.sam.sam, target.sam.sam)
    state = dict(source.sam.sam.state_dict())
    # official SAM 2 files carry object-pointer heads that GLUS does not read
    state["obj_ptr_proj.layers.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    report = load_sam2_checkpoint(target.sam.sam, path)
    assert same_weights(source.sam.sam, target.sam.sam)
    assert report.unexpected == ["obj_ptr_proj.layers.0.weight"]


def test_sam2_checkpoint_errors_name_file_and_keys(tmp_path):
    target = fresh(2)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_sam2_checkpoint(target.sam.sam, tmp_path / "missing.pt")
    flat = tmp_path / "flat.pt"
    torch.save(target.sam.sam.state_dict(), flat)
    with pytest.raises(CheckpointError, match="'model' key"):
        load_sam2_checkpoint(target.sam.sam, flat)
    partial = dict(target.sam.sam.state_dict())
    partial.pop("no_mem_embed")
    partial["maskmem_tpos_enc"] = torch.zeros(3, 1, 1, 32)
    bad = tmp_path / "bad.pt"
    torch.save({"model": partial}, bad)
    with pytest.raises(CheckpointError) as err:
        load_sam2_checkpoint(target.sam.sam, bad)
    assert "bad.pt" in str(err.value) and "no_mem_embed" in str(err.value)
    assert "maskmem_tpos_enc (3, 1, 1, 32)" in str(err.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt"):
        load_sam2_checkpoint(target.sam.sam, corrupt)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_glus_official_sharded_layout_loads(tmp_path, fmt):
    cfg = load_config("tiny", overrides={"vlm": {"projector": "linear"}})  # LISA-7B-v1: one Linear
    source, target = fresh(3, cfg), fresh(4, cfg)
    state = official_state(source)
    state["model.visual_model.obj_ptr_proj.weight"] = torch.zeros(2, 2)   # unused by GLUS
    keys = sorted(state)
    shards = {f"model-0000{i + 1}-of-00002.{fmt}": keys[i::2] for i in range(2)}
    weight_map = {}
    for name, shard_keys in shards.items():
        part = {k: state[k].contiguous() for k in shard_keys}
        if fmt == "safetensors":
            save_file(part, str(tmp_path / name))
        else:
            torch.save(part, tmp_path / name)
        weight_map.update({k: name for k in shard_keys})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (tmp_path / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    report = load_glus_checkpoint(target, tmp_path)
    assert same_weights(source, target)
    assert "sam.sam.obj_ptr_proj.weight" in report.unexpected
    frames = moving_disk_clip(5)
    a = VideoSegmenter(source).segment(frames, "the red circle")
    b = VideoSegmenter(target).segment(frames, "the red circle")
    assert (a.masks == b.masks).all()


def test_glus_checkpoint_missing_keys_is_clear_error(tmp_path):
    source, target = fresh(5), fresh(6)
    state = official_state(source)
    del state["model.text_hidden_fcs.0.0.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_glus_checkpoint(target, tmp_path)
    assert str(tmp_path) in str(err.value) and "seg_projection.0.weight" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        load_glus_checkpoint(target, empty)
    other = tmp_path / "other.safetensors"
    save_file({"foo.bar": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match="no GLUS/LISA keys"):
        load_glus_checkpoint(target, other)


def test_own_model_dir_round_trip(tmp_path):
    source = fresh(7)
    folder = save_model_dir(source, tmp_path / "m")
    loaded = load_model(folder)
    assert same_weights(source, loaded)
    assert loaded.tokenizer("the red circle").input_ids == source.tokenizer("the red circle").input_ids
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_model_dir_weights(fresh(8), folder)


def test_missing_checkpoint_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model("tiny", checkpoint=tmp_path / "nowhere")


def test_untrained_config_initialises_identically_every_time():
    assert same_weights(load_model("tiny"), load_model("tiny"))


def test_fp16_storage_halves_the_file_and_loads_back_as_fp32(tmp_path):
    import torch

    from glus_ros.inference import load_model
    from glus_ros.model.checkpoints import WEIGHTS_FILE, save_model_dir

    model = load_model("tiny")
    full = save_model_dir(model, tmp_path / "fp32")
    half = save_model_dir(model, tmp_path / "fp16", storage="fp16")
    ratio = (half / WEIGHTS_FILE).stat().st_size / (full / WEIGHTS_FILE).stat().st_size
    assert 0.45 < ratio < 0.55
    loaded = load_model(half)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert b.dtype == a.dtype, name
        if a.is_floating_point():
            torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="storage must be one of"):
        save_model_dir(model, tmp_path / "x", storage="int8")


def test_a_trained_folder_can_gain_a_head_through_overrides_but_stays_strict_otherwise(tmp_path):
    import torch

    from glus_ros.inference import load_model
    from glus_ros.model.checkpoints import CheckpointError, save_model_dir

    trained = load_model("tiny")
    with torch.no_grad():
        trained.seg_projection[0].weight.add_(1.0)  # something the fresh init cannot reproduce
    folder = save_model_dir(trained, tmp_path / "m")
    grown = load_model(folder, overrides={"points": {}})
    assert grown.point_head is not None
    assert torch.equal(grown.seg_projection[0].weight, trained.seg_projection[0].weight)
    # the folder itself must still hold every weight its own config needs
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text() + "points: {max_points: 8}\n")
    with pytest.raises(CheckpointError, match="point_head"):
        load_model(folder)


def test_finer_vision_input_resizes_the_patch_kernels(tmp_path):
    """64 px in 8 px patches -> 128 px in 16 px patches: same token grid, the enlarged image reads the same."""
    torch.manual_seed(0)
    plain = GLUSModel.from_config("tiny").eval()
    save_model_dir(plain, tmp_path / "plain")
    finer = load_model(tmp_path / "plain", overrides={"vlm": {"image_size": 128, "vision": {"patch_size": 16}}})
    assert finer.cfg.vlm.tokens_per_frame == plain.cfg.vlm.tokens_per_frame
    kernel = next(v for k, v in finer.state_dict().items() if k.endswith("patch_embedding.weight"))
    assert kernel.shape[-2:] == (16, 16)
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    enlarged = torch.nn.functional.interpolate(pixels, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        want = plain.encode_clip_frames(pixels)
        got = finer.eval().encode_clip_frames(enlarged)
        other = finer.encode_clip_frames(torch.rand(2, 3, 128, 128) * 2 - 1)
    assert (got - want).abs().mean() < 0.6 * (other - want).abs().mean()   # random kernels resample roughly
    # a smooth kernel resamples exactly: a constant patch reads the same at either size
    state = {"x.embeddings.patch_embedding.weight": torch.full((128, 3, 8, 8), 0.5)}

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.x = torch.nn.Module()
            self.x.embeddings = torch.nn.Module()
            self.x.embeddings.patch_embedding = torch.nn.Conv2d(3, 128, 16, 16, bias=False)

    assert resize_patch_embeddings(Holder(), state) == ["x.embeddings.patch_embedding.weight"]
    resized = state["x.embeddings.patch_embedding.weight"]
    assert resized.shape == (128, 3, 16, 16) and torch.allclose(resized.sum(dim=(2, 3)), torch.full((128, 3), 32.0))
    # without an override nothing is resized: a folder whose kernels do not fit is an error, as before
    finer_dir = tmp_path / "finer"
    save_model_dir(finer, finer_dir)
    config = finer_dir / "config.yaml"
    config.write_text(config.read_text().replace("patch_size: 16", "patch_size: 8").replace("image_size: 128",
                                                                                            "image_size: 64"))
    with pytest.raises(CheckpointError, match="patch_embedding"):
        load_model(finer_dir)


def test_deeper_llm_override_grows_identity_layers(tmp_path):
    """4 -> 6 LLM layers on a trained folder: the grown model computes what the stored one did, and
    only the new layers' residual outputs start at zero (so they learn from there)."""
    torch.manual_seed(0)
    plain = GLUSModel.from_config("tiny").eval()
    save_model_dir(plain, tmp_path / "plain")
    deeper = load_model(tmp_path / "plain", overrides={"vlm": {"text": {"num_hidden_layers": 6}}}).eval()
    layers = deeper.vlm.language_model.layers
    assert len(layers) == 6 and len(plain.vlm.language_model.layers) == 4
    for new in layers[4:]:
        assert torch.count_nonzero(new.self_attn.o_proj.weight) == 0
        assert torch.count_nonzero(new.mlp.down_proj.weight) == 0
        assert torch.count_nonzero(new.self_attn.q_proj.weight) > 0 and torch.count_nonzero(new.mlp.up_proj.weight) > 0
    for old, same in zip(plain.vlm.language_model.layers, layers[:4], strict=True):
        pairs = zip(old.state_dict().values(), same.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    embeds = torch.randn(2, 9, plain.cfg.vlm.text["hidden_size"])
    with torch.no_grad():
        want = plain.vlm.language_model(inputs_embeds=embeds).last_hidden_state
        got = deeper.vlm.language_model(inputs_embeds=embeds).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    # the grown layers train: a loss on the output reaches their residual outputs
    deeper.train()
    deeper.vlm.language_model(inputs_embeds=embeds).last_hidden_state.square().mean().backward()
    assert layers[5].mlp.down_proj.weight.grad.abs().sum() > 0
    # without an override a folder with fewer layers than its config asks for stays an error
    folder = tmp_path / "plain"
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("num_hidden_layers: 4", "num_hidden_layers: 6"))
    with pytest.raises(CheckpointError, match=r"layers\.4\."):
        load_model(folder)
