"""Molmo2's video input built without torchvision: the tensors, ids and strings transformers' processor makes.

transformers' ``Molmo2VideoProcessor`` needs torchvision for exactly two operations, ``resize`` and
``normalize`` (``tvF.resize`` / ``tvF.normalize``); where torchvision is missing (CPU installs) the
equality test runs transformers' processor with those two replaced by the torch operations torchvision
performs for float tensors (``interpolate`` bilinear, no antialiasing; ``sub / div``); everything else
(rounding, fused rescale, patch order, pooling windows and offsets, grids) is transformers' own code.
With torchvision the unmodified processor is compared.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Molmo2Processor

from glus_ros.backends.molmo2_folder import read_molmo2_folder
from glus_ros.backends.molmo2_inputs import (
    IMAGE_STRUCTURE_TOKENS,
    Molmo2Inputs,
    TokenLayout,
    VideoProcessing,
    patchify,
    pooling_windows,
    resize_frames,
    sample_frame_indices,
    torchvision_available,
    video_prompt_string,
    video_tensors,
)

from helpers_molmo2 import FRAME_SIZE, POOLING, write_tiny_molmo2

# imported as a submodule: ``transformers.models.molmo2``'s lazy attribute is a placeholder without torchvision
tv_video = importlib.import_module("transformers.models.molmo2.video_processing_molmo2")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_molmo2(tmp_path_factory.mktemp("molmo2") / "tiny")


def _frames(count: int, height: int = 37, width: int = 61, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _transformers_video_processor(proc: VideoProcessing) -> tv_video.Molmo2VideoProcessor:
    vp = tv_video.Molmo2VideoProcessor(size={"height": proc.size, "width": proc.size}, patch_size=proc.patch_size,
                                       pooling_size=list(proc.pooling), image_mean=list(proc.mean),
                                       image_std=list(proc.std), do_rescale=True, do_normalize=True,
                                       rescale_factor=proc.rescale_factor)
    if not torchvision_available():  # the two torchvision calls, as torchvision computes them for float tensors
        def resize(image, size, resample=None, antialias=True, **kwargs):
            return F.interpolate(image, size=(size.height, size.width), mode="bilinear", align_corners=False,
                                 antialias=antialias)

        def normalize(image, mean, std, inplace=False, **kwargs):
            mean = torch.as_tensor(mean, dtype=image.dtype)[:, None, None]
            std = torch.as_tensor(std, dtype=image.dtype)[:, None, None]
            return image.sub_(mean).div_(std) if inplace else image.sub(mean).div(std)

        vp.resize = resize
        vp.normalize = normalize
    return vp


@pytest.mark.parametrize(("size", "pooling", "count"), [(56, (2, 2), 3), (70, (2, 2), 2), (84, (3, 2), 1)])
def test_video_tensors_equal_transformers_processor(size, pooling, count):
    proc = VideoProcessing(size=size, patch_size=14, pooling=pooling, mean=(0.48, 0.45, 0.40), std=(0.26, 0.26, 0.27))
    frames = _frames(count)
    ours = video_tensors(frames, proc)
    theirs = _transformers_video_processor(proc)(videos=[np.stack(frames)], do_sample_frames=False,
                                                 return_tensors="pt")
    for key in ("pixel_values_videos", "video_token_pooling", "video_grids"):
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key
    side = size // 14
    rows, cols = -(-side // pooling[0]), -(-side // pooling[1])
    assert ours["video_grids"].tolist() == [[count, rows, cols]]
    assert ours["pixel_values_videos"].shape == (count, side * side, 14 * 14 * 3)
    assert ours["video_token_pooling"].shape == (count * rows * cols, pooling[0] * pooling[1])


@pytest.mark.parametrize(("rows", "cols", "pool"), [(4, 4, (2, 2)), (5, 7, (3, 2)), (27, 27, (3, 3)), (3, 3, (4, 4))])
def test_pooling_windows_and_patches_equal_transformers_helpers(rows, cols, pool):
    grid = torch.arange(rows * cols, dtype=torch.int64).reshape(rows, cols)
    theirs, r, c = tv_video.arange_for_pooling(grid, *pool)
    ours, r2, c2 = pooling_windows(rows, cols, *pool)
    assert (r, c) == (r2, c2) and torch.equal(ours, theirs)
    valid = ours[ours >= 0]
    assert sorted(valid.tolist()) == list(range(rows * cols))   # every patch pooled exactly once
    images = torch.rand(2, 14 * rows, 14 * cols, 3)
    assert torch.equal(patchify(images, 14), tv_video.batch_pixels_to_patches(images, 14))


def test_resize_rounds_in_float_and_keeps_a_same_size_frame():
    frame = torch.from_numpy(_frames(1, 56, 56)[0]).permute(2, 0, 1)[None]
    assert torch.equal(resize_frames(frame, 56), frame)
    small = resize_frames(torch.tensor([[[[0, 255], [255, 0]]]], dtype=torch.uint8).expand(1, 3, 2, 2), 4)
    assert small.dtype == torch.uint8 and small[0, 0].tolist()[0] == [0, 64, 191, 255]


@pytest.mark.parametrize("layout", [TokenLayout(False, False), TokenLayout(True, False), TokenLayout(True, True)])
def test_video_string_equals_transformers_get_video_string(layout):
    times = [0.0, 0.5, 1.25, 12.0]
    ours = video_prompt_string(4, 2, 3, times, layout)
    settings = types.SimpleNamespace(use_frame_special_tokens=layout.use_frame_special_tokens,
                                     video_use_col_tokens=layout.video_use_col_tokens)
    theirs = Molmo2Processor.get_video_string(settings, torch.tensor([4, 2, 3]), times)  # transformers' own
    assert ours == theirs
    start = "<frame_start>" if layout.use_frame_special_tokens else "<im_start>"
    assert ours.startswith("0.0 " + start) and " 1.2 " in ours and " 12.0 " in ours
    assert ours.count("<im_patch>") == 4 * 2 * 3


def test_inputs_fit_the_models_forward(folder):
    from transformers import AutoTokenizer, Molmo2ForConditionalGeneration

    checked = read_molmo2_folder(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    inputs = Molmo2Inputs(folder, tokenizer, checked.chat_template, checked.video, checked.layout, "own")
    frames = _frames(3)
    batch = inputs.build(frames, [0.0, 0.5, 1.0], "Point to the red circle.")
    ids = batch["input_ids"][0]
    vocab = tokenizer.get_vocab()
    rows, cols = checked.video.token_grid
    assert (rows, cols) == (FRAME_SIZE // 14 // POOLING[0], FRAME_SIZE // 14 // POOLING[1])
    patches = int((ids == vocab["<im_patch>"]).sum())
    assert patches == 3 * rows * cols == batch["video_token_pooling"].shape[0]
    # released folders: frames framed by <im_start> / <im_end> (use_frame_special_tokens false)
    assert int((ids == vocab["<im_start>"]).sum()) == int((ids == vocab["<im_end>"]).sum()) == 3
    assert int((ids == vocab["<frame_start>"]).sum()) == 0
    assert batch["mm_token_type_ids"].sum() == 3 * (rows * cols + 2)
    structure = torch.tensor(tokenizer.convert_tokens_to_ids(list(IMAGE_STRUCTURE_TOKENS)))
    assert torch.equal(batch["mm_token_type_ids"][0].bool(), torch.isin(ids, structure))
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_end|>0.0 <im_start>")          # BOS (= <|im_end|>) first, then the video
    assert text.endswith("<im_end><|im_start|>user\nPoint to the red circle.<|im_end|>\n<|im_start|>assistant\n")
    assert " 0.5 <im_start>" in text and " 1.0 <im_start>" in text
    model = Molmo2ForConditionalGeneration.from_pretrained(str(folder)).eval()
    with torch.inference_mode():   # the placeholder count must equal the pooled features, or forward raises
        logits = model(**batch).logits
    assert logits.shape == (1, ids.shape[0], model.config.text_config.vocab_size)
    ids_cut = batch["input_ids"].clone()
    first_patch = int((ids_cut[0] == vocab["<im_patch>"]).nonzero()[0])
    ids_cut[0, first_patch] = vocab["<|endoftext|>"]
    with pytest.raises(Exception, match="do not match"):   # one patch token too few: transformers' own check
        with torch.inference_mode():
            model(**{**batch, "input_ids": ids_cut})


def test_uniform_last_frame_sampling():
    proc = VideoProcessing(max_fps=2.0, num_frames=8)
    assert sample_frame_indices(6, 10.0, proc) == [0, 5]
    assert sample_frame_indices(30, 10.0, proc) == [0, 5, 10, 15, 20, 25, 29]
    assert sample_frame_indices(2, 10.0, proc) == [0, 1]
    long = sample_frame_indices(300, 10.0, proc)   # longer than (8 - 1) / 2 s: 8 frames, first to last
    assert len(long) == 8 and long[0] == 0 and long[-1] == 299
    assert sample_frame_indices(5, 1.0, proc) == [0, 1, 2, 3, 4]   # slower than max_fps: every frame
    with pytest.raises(ValueError, match="fps"):
        sample_frame_indices(5, 0.0, proc)


def test_video_processing_config_errors():
    with pytest.raises(ValueError, match="square"):
        VideoProcessing.from_json({"size": {"height": 56, "width": 70}}, "v.json")
    with pytest.raises(ValueError, match="bilinear"):
        VideoProcessing.from_json({"resample": 0}, "v.json")
    with pytest.raises(ValueError, match="frame_sample_mode"):
        VideoProcessing.from_json({"frame_sample_mode": "fps"}, "v.json")
    with pytest.raises(ValueError, match="multiple"):
        VideoProcessing.from_json({"size": {"height": 50, "width": 50}}, "v.json")
    assert VideoProcessing.from_json({}, "v.json") == VideoProcessing()


def _inputs(folder: Path, mode: str) -> Molmo2Inputs:
    from transformers import AutoTokenizer

    checked = read_molmo2_folder(folder)
    return Molmo2Inputs(folder, AutoTokenizer.from_pretrained(str(folder)), checked.chat_template, checked.video,
                        checked.layout, mode)


@pytest.mark.skipif(not torchvision_available(), reason="transformers' Molmo2 processor needs torchvision")
def test_transformers_processor_mode_builds_the_same_inputs(folder):
    frames = _frames(3)
    ours = _inputs(folder, "own").build(frames, [0.0, 0.5, 1.0], "Point to the cup.")
    theirs = _inputs(folder, "transformers").build(frames, [0.0, 0.5, 1.0], "Point to the cup.")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key


def test_preprocessing_mode_choice(folder):
    assert _inputs(folder, "auto").mode == ("transformers" if torchvision_available() else "own")
    if not torchvision_available():
        with pytest.raises(ValueError, match="needs torchvision"):
            _inputs(folder, "transformers")
    with pytest.raises(ValueError, match="preprocessing must be"):
        _inputs(folder, "pil")
