"""The GLUS model: [SEG] prompts from the MLLM, end-to-end gradients through the SAM 2 memory."""

import numpy as np
import pytest
import torch

from glus_ros.inference import VideoSegmenter
from glus_ros.model.config import load_config
from glus_ros.model.glus import GLUSModel
from glus_ros.model.transforms import clip_input, sam_input, to_tensor

from helpers_model import moving_disk_clip, tiny_model


def _clip_tensors(model, frames):
    pixels = to_tensor(frames)
    return clip_input(pixels, model.cfg.vlm.image_size), sam_input(pixels, model.sam.image_size)


def _decode_query_window(model, num_decoded):
    """4 context + 4 query frames of the disk clip; decode the first ``num_decoded`` query frames with memory."""
    clip_px, sam_px = _clip_tensors(model, moving_disk_clip(8))
    embeds = model.encode_clip_frames(clip_px)
    out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
    feats = model.encode_sam_frames(sam_px[4:])
    bank = model.new_memory_bank()
    return [model.track_step(feats.select(slice(i, i + 1)), out.prompts[:, i], bank) for i in range(num_decoded)]



def test_preprocessing_stays_on_the_frames_device():
    """The normalisation constants follow the frames (CUDA inference failed on CPU constants; 'meta' stands in)."""
    frames = torch.rand(2, 3, 10, 12)
    for convert, mean in ((clip_input, 0.48145466), (sam_input, 0.485)):
        out = convert(frames, 8)
        assert out.shape == (2, 3, 8, 8) and out.device.type == "cpu"
        assert convert(torch.full((1, 3, 4, 4), mean), 4)[0, 0].abs().max().item() < 1e-5  # mean -> 0
        assert convert(frames.to("meta"), 8).device.type == "meta"

def test_one_prompt_per_query_frame_and_they_differ():
    model = tiny_model()
    frames = moving_disk_clip(8)
    clip_px, _ = _clip_tensors(model, frames)
    with torch.no_grad():
        embeds = model.encode_clip_frames(clip_px)
        out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])
    assert out.prompts.shape == (1, 4, model.sam.prompt_dim)
    assert out.seg_hidden.shape == (1, 4, model.vlm.hidden_size)
    # causal LLM: each [SEG] sees a different prefix, so the four prompts are not identical
    assert not torch.allclose(out.prompts[0, 0], out.prompts[0, 3])


def test_expression_changes_the_prompt():
    model = tiny_model()
    clip_px, _ = _clip_tensors(model, moving_disk_clip(8))
    with torch.no_grad():
        embeds = model.encode_clip_frames(clip_px)
        a = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"]).prompts
        b = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the blue square"]).prompts
    assert not torch.allclose(a, b)


def test_gradient_reaches_memory_attention_and_encoder_in_training():
    torch.manual_seed(1)
    model = GLUSModel.from_config("tiny").train()
    assert model.new_memory_bank().stride == model.cfg.memory.train_stride
    preds = _decode_query_window(model, 4)
    # loss on the LAST frame only: it reaches the memory modules solely through the bank
    preds[-1].logits.sigmoid().mean().backward()
    sam = model.sam.sam

    def has_grad(module):
        return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())

    assert has_grad(sam.memory_attention)
    assert has_grad(sam.memory_encoder)
    # and the earlier frames' [SEG] prompts (through their memories) reach the LLM
    assert has_grad(model.seg_projection) and has_grad(model.vlm.language_model)


def test_no_graph_kept_at_inference():
    model = tiny_model()
    seg = VideoSegmenter(model)
    frames = moving_disk_clip(6)
    result = seg.segment(frames, "the red circle")
    assert result.masks.shape == (6, 72, 96) and result.masks.dtype == bool
    assert result.scores.shape == (6,) and np.all((result.scores >= 0) & (result.scores <= 1))


def test_segment_from_key_frame_decodes_every_frame_once():
    seg = VideoSegmenter(tiny_model())
    frames = moving_disk_clip(9)
    calls = []
    result = seg.segment(frames, "the red circle", start_frame=4, progress=calls.append)
    assert sum(calls) == 9 and result.start_frame == 4
    assert result.masks.shape == (9, 72, 96)


def test_wrong_frame_sizes_rejected():
    seg = VideoSegmenter(tiny_model())
    frames = moving_disk_clip(4)
    frames[2] = frames[2][:40]
    with pytest.raises(ValueError, match="frame 2"):
        seg.segment(frames, "the red circle")
    with pytest.raises(ValueError, match="no frames"):
        seg.segment([], "the red circle")


def test_bf16_autocast_on_cpu_agrees_with_fp32():
    model = tiny_model()
    frames = moving_disk_clip(5)
    fp32 = VideoSegmenter(model, dtype="fp32").segment(frames, "the red circle")
    bf16 = VideoSegmenter(model, dtype="bf16").segment(frames, "the red circle")
    assert np.allclose(fp32.scores, bf16.scores, atol=0.05)
    assert (fp32.masks == bf16.masks).mean() > 0.9


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model named 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvlm: {image_size: 64, visual_token_pool: 3, vision: {patch_size: 8}}\nsam2: {}\n")
    with pytest.raises(ValueError, match="square number"):
        load_config(bad)
    bad.write_text("name: x\nvlm: {bogus: 1}\nsam2: {}\n")
    with pytest.raises(ValueError, match="bogus"):
        load_config(bad)


def test_paper_trainable_split_freezes_encoders_and_trains_memory():
    torch.manual_seed(2)
    model = GLUSModel.from_config("tiny").train()
    groups = model.parameter_groups()
    # every parameter belongs to exactly one group
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    # the paper's split: LLM via LoRA (added by the trainer), decoder, projections, memory
    n = model.apply_trainable(["llm_lora", "projections", "mask_decoder", "memory"])
    assert n == sum(p.numel() for g in ("projections", "mask_decoder", "memory") for p in groups[g])
    preds = _decode_query_window(model, 3)
    preds[-1].logits.mean().backward()
    assert all(p.grad is None for p in model.sam.sam.image_encoder.parameters())
    assert all(p.grad is None for p in model.vlm.vision_tower.parameters())
    assert any(p.grad is not None for p in model.sam.sam.memory_attention.parameters())
    with pytest.raises(ValueError, match="unknown trainable groups"):
        model.apply_trainable(["everything"])


def test_glus_s_config_matches_the_paper():
    cfg = load_config("glus-s")
    assert cfg.vlm.patches_per_side == 16 and cfg.vlm.tokens_per_frame == 64  # 256 -> 64 tokens per frame
    assert cfg.sampling.num_context == 4 and cfg.sampling.num_query == 4
    assert (cfg.memory.slots, cfg.memory.stride, cfg.memory.train_stride) == (7, 3, 1)
    assert cfg.sam_image_size == 1024 and cfg.sam_hidden_dim == 256
    assert cfg.vlm.projector == "linear" and cfg.sam2["use_obj_ptrs_in_encoder"] is False
    # as the official train_ds.py: the paper trains the memory end to end, the released code runs it without gradient
    assert set(cfg.trainable) == {"llm_lora", "projections", "mask_decoder", "token_embeddings"}
    # its tokenizer comes with the official checkpoint: without one, a clear error, not a download
    with pytest.raises(ValueError, match="pass the checkpoint directory"):
        GLUSModel.from_config("glus-s")
