"""The SAM 3 folder, its inputs and post-processing, checked without downloads.

How the frame preprocessing is checked against transformers: ``Sam3ImageProcessor`` cannot even be imported
without torchvision (its module imports ``torchvision.ops``), so where torchvision is missing the test runs
transformers' own ``TorchvisionBackend._preprocess`` (the pipeline ``Sam3ImageProcessor`` inherits: resize, then
the fused rescale + normalise) configured as the folder's ``processor_config.json`` says, with its two torchvision
calls (``resize``, ``normalize``) replaced by the torch operations torchvision performs for them; the tensors
must be identical. Where torchvision imports, the real ``Sam3ImageProcessor`` built from the folder's config is
compared as it is.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_sam3 import SIZE, processor_config, write_tiny_sam3
from transformers import AutoTokenizer
from transformers.image_processing_backends import TorchvisionBackend

from glus_ros.backends.loading import backend_of, load_backend
from glus_ros.backends.sam3_folder import read_sam3_folder
from glus_ros.backends.sam3_inputs import (
    FramePreprocessing,
    concept_phrase,
    native_uint8_resize,
    preprocess_frames,
    resize_frames,
    tokenize_phrase,
)
from glus_ros.backends.sam3_postprocess import fill_holes, mask_nms, non_overlapping

TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3") / "sam3-tiny")


def _frames(count: int, height: int = 37, width: int = 61, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


class _PipelineWithTorchOps(TorchvisionBackend):
    """transformers' torchvision pipeline with its two torchvision calls done as torchvision does them."""

    def resize(self, image, size, resample=None, antialias=True, **kwargs):
        if native_uint8_resize(image.device):   # torchvision's native uint8 kernel (CPU, AVX2)
            return F.interpolate(image, size=(size.height, size.width), mode="bilinear", align_corners=False,
                                 antialias=antialias)
        out = F.interpolate(image.float(), size=(size.height, size.width), mode="bilinear", align_corners=False,
                            antialias=antialias)
        return out.round_().clamp_(0, 255).to(image.dtype)

    def normalize(self, image, mean, std, inplace=False, **kwargs):
        mean = torch.as_tensor(mean, dtype=image.dtype)[:, None, None]
        std = torch.as_tensor(std, dtype=image.dtype)[:, None, None]
        return image.sub(mean).div(std)


@pytest.mark.parametrize(("height", "width"), [(37, 61), (112, 112), (240, 320)])
def test_frames_equal_transformers_preprocessing(height, width):
    raw = processor_config()["image_processor"]
    proc = FramePreprocessing.from_json(raw, "processor_config.json")
    frames = _frames(2, height, width)
    ours = preprocess_frames(frames, proc)
    images = [torch.from_numpy(f).permute(2, 0, 1).contiguous() for f in frames]
    if TORCHVISION:
        from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

        theirs = Sam3ImageProcessor(**{k: v for k, v in raw.items() if k != "image_processor_type"})(
            images=frames, return_tensors="pt")["pixel_values"]
    else:
        pipeline = _PipelineWithTorchOps()
        from transformers.image_processing_utils import SizeDict

        theirs = pipeline._preprocess(images, do_resize=True, size=SizeDict(height=SIZE, width=SIZE), resample=2,
                                      do_center_crop=False, crop_size=None, do_rescale=True,
                                      rescale_factor=raw["rescale_factor"], do_normalize=True,
                                      image_mean=tuple(raw["image_mean"]), image_std=tuple(raw["image_std"]),
                                      do_pad=False, pad_size=None, disable_grouping=None,
                                      return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(ours, theirs.to(ours.dtype))


def test_resize_keeps_a_same_size_frame_and_stays_uint8():
    frame = torch.from_numpy(_frames(1, 56, 56)[0]).permute(2, 0, 1)[None]
    assert torch.equal(resize_frames(frame, 56), frame)
    assert resize_frames(frame, 28).dtype == torch.uint8


def test_processor_config_errors():
    base = processor_config()["image_processor"]
    for change, message in (({"size": {"height": 10, "width": 12}}, "square"), ({"resample": 3}, "bilinear"),
                            ({"do_normalize": False}, "do_normalize")):
        with pytest.raises(ValueError, match=message):
            FramePreprocessing.from_json({**base, **change}, "processor_config.json")


def test_phrases_and_their_token_limit(folder):
    assert concept_phrase("the mugs.") == "the mugs"
    assert concept_phrase("How many red cups are there?") == "red cups"
    assert concept_phrase("how many bottles?") == "bottles"
    for bad, message in (("", "empty"), ("how many?", "objects to count"), ("...", "no noun phrase")):
        with pytest.raises(ValueError, match=message):
            concept_phrase(bad)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokens = tokenize_phrase(tokenizer, "the mugs")
    assert tokens.input_ids.shape == (1, 32) and int(tokens.attention_mask.sum()) == 2 + len("themugs")
    with pytest.raises(ValueError, match="at most 32"):   # the text encoder would be given more than it reads
        tokenize_phrase(tokenizer, "a blue mug with a long handle on the left")


def test_mask_nms_drops_duplicates_and_keeps_separate_instances():
    masks = torch.full((4, 16, 16), -5.0)
    masks[0, 2:8, 2:8] = 5.0
    masks[1, 2:8, 3:9] = 5.0     # a duplicate of 0 (IoU 0.71), less probable
    masks[2, 10:14, 10:14] = 5.0
    masks[3, 10:14, 10:14] = 5.0  # below the threshold
    keep = mask_nms(torch.tensor([0.9, 0.8, 0.7, 0.3]), masks, 0.5, 0.1)
    assert keep.tolist() == [True, False, True, False]


def test_fill_holes_fills_small_holes_and_drops_specks_but_keeps_small_objects():
    logits = torch.full((2, 20, 20), -3.0)
    logits[0, 2:12, 2:12] = 3.0
    logits[0, 6, 6] = -3.0          # a one-pixel hole
    logits[0, 16, 16] = 3.0         # a speck
    logits[1, 5:8, 5:8] = 3.0       # a small object alone: kept (at most half its own area is removed)
    out = fill_holes(logits, 16)
    assert out[0, 6, 6] > 0 and out[0, 16, 16] <= 0 and (out[1] > 0).sum() == 9
    assert torch.equal(fill_holes(logits, 0), logits)


def test_non_overlapping_gives_each_pixel_to_the_most_confident_instance():
    logits = torch.full((2, 8, 8), -3.0)
    logits[0, :, :5] = 3.0
    logits[1, :, 3:] = 3.0
    out = non_overlapping(logits, torch.tensor([0.6, 0.9]))
    assert not ((out[0] > 0) & (out[1] > 0)).any()
    assert (out[1, :, 3:] > 0).all() and (out[0, :, :3] > 0).all()


@pytest.mark.parametrize(("missing", "message"), [
    ("model.safetensors", "no weights"),
    ("tokenizer.json", "no tokenizer"),
    ("tokenizer_config.json", "tokenizer_config.json"),
    ("processor_config.json", "processor_config.json"),
    ("config.json", "no config.json"),
])
def test_a_folder_with_a_missing_file_is_one_clear_error_naming_it(folder, tmp_path, missing, message):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / missing).unlink()
    if missing == "tokenizer.json":
        (broken / "vocab.json").unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=message) as err:
        read_sam3_folder(broken)
    assert str(broken) in str(err.value)
    if missing != "config.json":
        with pytest.raises((FileNotFoundError, ValueError), match=message):
            load_backend(str(broken))


def test_model_type_and_size_mismatches_are_refused(folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "sam2_video"}))
    with pytest.raises(ValueError, match="sam2_video"):
        backend_of(str(other))
    config["detector_config"]["vision_config"]["backbone_config"]["image_size"] = 224
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="224"):
        read_sam3_folder(other)


def test_the_folder_is_the_sam3_backend_and_grounds_points(folder):
    assert backend_of(str(folder)) == "sam3"
    backend = load_backend(str(folder))
    assert backend.image_size == SIZE and backend.settings.det_nms_thresh == 0.1
    result = backend.ground(_frames(2, 48, 64), ["the mugs"])[0]
    assert result.expression == "the mugs" and set(result.frames) == {0, 1} and result.count is not None
    assert all(0 <= c <= 1 for f in result.frames.values() for p in f.points or [] for c in p)
    with pytest.raises(ValueError, match="unknown sam3 keys"):
        load_backend(str(folder), overrides={"sam3": {"nope": 1}})
    with pytest.raises(ValueError, match="not read with it"):
        load_backend(str(folder), checkpoint=str(folder))
