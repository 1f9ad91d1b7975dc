"""The backend interface: which backend a --model names, GLUS's per-window grounding, and loading errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from glus_ros.backends.glus import GLUSBackend
from glus_ros.backends.loading import backend_of, load_backend
from glus_ros.inference import load_model
from glus_ros.model.config import MemoryConfig, load_config
from glus_ros.model.sam2_tracker import SAM2Tracker, TrackerConfig, match_sam2_node, parameter_shapes
from glus_ros.model.transforms import clip_input, to_tensor

from helpers_model import moving_disk_clip, tiny_model
from helpers_molmo2 import write_tiny_molmo2, write_tiny_sam2


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backends")
    return {"folder": write_tiny_molmo2(root / "molmo2-tiny"), "sam2": write_tiny_sam2(root / "sam2_tiny.pt"),
            "root": root}


def test_backend_of_each_kind_of_spec(files, tmp_path):
    assert backend_of("tiny") == "glus" and backend_of("glus-tiny-synth") == "glus"   # the default stays GLUS
    assert backend_of("molmo2") == "molmo2"
    assert backend_of(files["folder"]) == "molmo2"
    custom = tmp_path / "mine.yaml"
    custom.write_text(yaml.safe_dump({"backend": "molmo2", "molmo2": {"folder": str(files["folder"])}}))
    assert backend_of(custom) == "molmo2"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"backend": "llava"}))
    with pytest.raises(ValueError, match="unknown backend 'llava'"):
        backend_of(bad)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="model_type 'llava'"):
        backend_of(other)
    with pytest.raises(FileNotFoundError, match="neither config"):
        backend_of(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        backend_of(tmp_path / "missing" / "folder")


def test_glus_backend_grounds_a_window_as_seg_prompts_does():
    model = tiny_model()
    clip = moving_disk_clip(num_frames=8)
    backend = GLUSBackend(model)
    context, window = [clip[0], clip[2], clip[4], clip[6]], clip[4:8]
    [got] = backend.ground(window, ["the red circle"], context=context)
    assert sorted(got.frames) == [0, 1, 2, 3] and got.text is None
    with torch.inference_mode():
        embeds = model.encode_clip_frames(clip_input(to_tensor(context + window), model.cfg.vlm.image_size))
        direct = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
    for t in range(4):
        assert torch.allclose(got.frames[t].prompt, direct.prompts[0, t].float(), atol=1e-6)
        assert got.frames[t].points is None   # the tiny model has no point head
    # a stream's first frames: a short window is padded with its newest frame, only its own frames answered
    short = backend.ground(clip[:2], ["the red circle", "the blue square"])
    assert [sorted(g.frames) for g in short] == [[0, 1], [0, 1]]
    assert [g.expression for g in short] == ["the red circle", "the blue square"]
    with pytest.raises(ValueError, match="at most 4 frames"):
        backend.ground(clip[:5], ["the red circle"])
    with pytest.raises(ValueError, match="empty expression"):
        backend.ground(clip[:2], ["  "])
    with pytest.raises(ValueError, match="is 96x72"):
        backend.ground([clip[0], clip[1][:10]], ["x"])


def test_glus_backend_gives_point_head_points():
    model = load_model("tiny", overrides={"points": {"max_points": 3}})
    [got] = GLUSBackend(model).ground(moving_disk_clip(num_frames=4), ["the red circle"])
    for grounding in got.frames.values():
        assert isinstance(grounding.points, list)
        assert all(0.0 <= c <= 1.0 for p in grounding.points for c in p)


def test_load_backend_dispatch_and_config_errors(files, tmp_path):
    assert isinstance(load_backend("tiny"), GLUSBackend)
    with pytest.raises(ValueError, match="needs its model folder"):
        load_backend("molmo2", sam2_checkpoint=files["sam2"])
    with pytest.raises(ValueError, match="Molmo2 folder already"):
        load_backend(files["folder"], checkpoint=files["folder"], sam2_checkpoint=files["sam2"])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"backend": "molmo2", "molmo2": {"folder": "x", "temperature": 0.7}}))
    with pytest.raises(ValueError, match="unknown molmo2 keys"):
        load_backend(unknown, sam2_checkpoint=files["sam2"])
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"backend": "molmo2", "vlm": {}, "molmo2": {"folder": "x"}}))
    with pytest.raises(ValueError, match="unknown keys"):
        load_backend(extra, checkpoint=files["folder"], sam2_checkpoint=files["sam2"])
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"backend": "molmo2", "molmo2": {"request": "describe"}}))
    with pytest.raises(ValueError, match="request must be"):
        load_backend(wrong, checkpoint=files["folder"], sam2_checkpoint=files["sam2"])


def test_missing_or_unfitting_sam2_checkpoint_is_a_clear_error(files, tmp_path):
    with pytest.raises(ValueError, match="--sam2-checkpoint"):
        load_backend(files["folder"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backend(files["folder"], sam2_checkpoint=tmp_path / "missing.pt")
    odd = tmp_path / "odd.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1, 8, 3, 3)}}, odd)
    with pytest.raises(ValueError, match="no SAM 2 configuration of this project fits"):
        load_backend(files["folder"], sam2_checkpoint=odd)
    flat = tmp_path / "flat.pt"
    torch.save({"weights": {}}, flat)
    with pytest.raises(ValueError, match="not a SAM 2 checkpoint"):
        load_backend(files["folder"], sam2_checkpoint=flat)


def test_sam2_node_matching_by_tensor_shapes(files):
    state = torch.load(files["sam2"], weights_only=True)["model"]
    name, node = match_sam2_node(state, files["sam2"])
    assert node == load_config("tiny").sam2 and name in ("glus-tiny-synth", "tiny")
    hiera_l = parameter_shapes(load_config("glus-s").sam2)   # built on the meta device: no memory
    assert hiera_l["image_encoder.trunk.pos_embed"] == (1, 144, 7, 7)
    assert len(hiera_l) > len(state)


def test_sam2_tracker_needs_its_memory():
    with pytest.raises(ValueError, match="memory"):
        SAM2Tracker(TrackerConfig(load_config("tiny").sam2, MemoryConfig(enabled=False)))
    tracker = SAM2Tracker(TrackerConfig(load_config("tiny").sam2, MemoryConfig(slots=3, stride=2)))
    bank = tracker.eval().new_memory_bank()
    assert bank is not None and tracker.sam.image_size == 128


def test_molmo2_folder_without_a_file_it_needs(files, tmp_path):
    for missing, message in (("video_preprocessor_config.json", "no video_preprocessor_config"),
                             ("chat_template.jinja", "chat template"), ("tokenizer.json", None),
                             ("config.json", "neither config")):
        broken = tmp_path / f"no-{missing}"
        shutil.copytree(files["folder"], broken)
        (broken / missing).unlink()
        if missing == "tokenizer.json":   # vocab.json + merges.txt still make a tokenizer: remove them too
            (broken / "vocab.json").unlink()
            message = "no tokenizer"
        with pytest.raises((FileNotFoundError, ValueError), match=message):
            load_backend(broken, sam2_checkpoint=files["sam2"])


def test_molmo2_weights_that_do_not_fit_are_refused(files, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "cut"
    shutil.copytree(files["folder"], broken)
    shard = sorted(broken.glob("model-*.safetensors"))[0]
    state = load_file(str(shard))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(shard), metadata={"format": "pt"})
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    del index["weight_map"][dropped]
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="do not fit config"):
        load_backend(broken, sam2_checkpoint=files["sam2"])
    resized = tmp_path / "resized"
    shutil.copytree(files["folder"], resized)
    video = json.loads((resized / "video_preprocessor_config.json").read_text())
    video["size"] = {"height": 70, "width": 70}
    (resized / "video_preprocessor_config.json").write_text(json.dumps(video))
    with pytest.raises(ValueError, match="vision tower"):
        load_backend(resized, sam2_checkpoint=files["sam2"])


def test_grounding_frames_are_window_indices(files):
    backend = load_backend(files["folder"], sam2_checkpoint=files["sam2"])
    frames = [np.full((40, 50, 3), v, dtype=np.uint8) for v in range(0, 200, 20)]
    assert backend.shown_frames([0.5 * i for i in range(8)]) == list(range(8))   # fits: all shown
    shown = backend.shown_frames([0.5 * i for i in range(10)])   # 10 frames, the folder shows at most 8
    assert len(shown) <= 8 and shown[0] == 0 and shown[-1] == 9
    [got] = backend.ground(frames, ["the red circle"], timestamps=[0.5 * i for i in range(10)])
    assert set(got.frames) <= set(shown)


def test_glus_only_commands_refuse_a_molmo2_model_clearly(files):
    with pytest.raises(ValueError, match="is a molmo2 model"):
        load_model("molmo2")
    with pytest.raises(ValueError, match="is a molmo2 model"):
        load_model(files["folder"])
