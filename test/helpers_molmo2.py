"""A tiny random Molmo2 written as the released allenai/Molmo2-* folders are, and a tiny official SAM 2 .pt.

Layout facts (from the released Molmo2-4B folder): ``config.json`` with ``vit_config`` (``image_default_input_size``,
``image_patch_size``, ``image_num_pos``; it declares more ViT layers than the weights hold: the weights stop at
the deepest layer ``vit_layers`` reads), ``adapter_config`` (``vit_layers``) and ``text_config``; weights
sharded with ``model.safetensors.index.json``, tensor names ``model.transformer.blocks.N.self_attn.att_proj``
(q, k, v stacked), ``mlp.ff_proj`` (up, gate stacked), ``wte.embedding`` (the base vocabulary) +
``wte.new_embedding`` (the added rows), ``model.vision_backbone.image_vit.transformer.resblocks.N.attention.wq``...;
tokenizer files, ``tokenizer_config.json`` (Qwen2Tokenizer, BOS = EOS = ``<|im_end|>``), ``added_tokens.json``,
``special_tokens_map.json``, ``preprocessor_config.json``, ``video_preprocessor_config.json``,
``processor_config.json`` (``use_frame_special_tokens: false``), ``generation_config.json`` and
``chat_template.jinja``. Image tokens sit right after the base vocabulary, as in the release (151936...).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LogitsProcessorList, Molmo2Config, Molmo2ForConditionalGeneration
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from glus_ros.backends.molmo2_random import CHAT_TEMPLATE, IMAGE_TOKENS, TEXT_SPECIALS, ForceAnswer, byte_tokenizer
from glus_ros.model.config import DEFAULT_MODEL, load_config
from glus_ros.model.sam2_head import build_sam2

FRAME_SIZE = 56      # 4 x 4 patches of 14 px
POOLING = [2, 2]     # 2 x 2 tokens per frame
ADDITIONAL_VOCAB = 16
MAX_NEW_TOKENS = 24  # generation_config.json: the random model's garbage answers stay short


def tiny_config(vocab: dict[str, int]) -> dict:
    """config.json in the released key layout, tiny sizes."""
    ids = {t: vocab[t] for t in IMAGE_TOKENS}
    base = len(vocab) - len(IMAGE_TOKENS)
    return {
        "architectures": ["Molmo2ForConditionalGeneration"],
        "model_type": "molmo2",
        "dtype": "float32",
        "image_start_token_id": ids["<im_start>"], "image_end_token_id": ids["<im_end>"],
        "image_patch_id": ids["<im_patch>"], "image_high_res_id": ids["<im_patch>"],
        "image_col_id": ids["<im_col>"], "low_res_image_start_token_id": ids["<low_res_im_start>"],
        "image_low_res_id": ids["<im_low>"], "frame_start_token_id": ids["<frame_start>"],
        "frame_end_token_id": ids["<frame_end>"], "use_frame_special_tokens": False,
        "initializer_range": 0.02, "tie_word_embeddings": False, "use_cache": True,
        "vit_config": {"model_type": "molmo2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 5,
                       "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8,
                       "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
                       "image_default_input_size": [FRAME_SIZE, FRAME_SIZE], "image_patch_size": 14,
                       "image_num_pos": (FRAME_SIZE // 14) ** 2, "attention_dropout": 0.0},
        "adapter_config": {"model_type": "molmo2", "hidden_size": 32, "intermediate_size": 64,
                           "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8, "hidden_act": "silu",
                           "text_hidden_size": 32, "vit_layers": [-3, -4], "attention_dropout": 0.0},
        "text_config": {"model_type": "molmo2_text", "hidden_size": 32, "intermediate_size": 64,
                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                        "vocab_size": base, "additional_vocab_size": ADDITIONAL_VOCAB, "hidden_act": "silu",
                        "layer_norm_eps": 1e-6, "max_position_embeddings": 4096, "qk_norm_type": "qwen3",
                        "qkv_bias": False, "norm_after": False, "rope_theta": 10000.0, "rope_scaling": None,
                        "rope_scaling_layers": None, "use_cache": True},
    }


def hub_state(model: Molmo2ForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The model's tensors under the released checkpoint's names (the inverse of transformers' conversion)."""
    cfg = model.config
    vocab = cfg.text_config.vocab_size
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone().contiguous()
        if key == "lm_head.weight":
            out[key] = value
        elif key.startswith("model.language_model."):
            rest = key.removeprefix("model.language_model.")
            if rest == "embed_tokens.weight":
                out["model.transformer.wte.embedding"] = value[:vocab].clone()
                out["model.transformer.wte.new_embedding"] = value[vocab:].clone()
            elif rest == "norm.weight":
                out["model.transformer.ln_f.weight"] = value
            else:
                layer, name = rest.removeprefix("layers.").split(".", 1)
                prefix = f"model.transformer.blocks.{layer}."
                simple = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight":
                          "ff_norm.weight", "self_attn.o_proj.weight": "self_attn.attn_out.weight",
                          "mlp.down_proj.weight": "mlp.ff_out.weight", "self_attn.q_norm.weight":
                          "self_attn.q_norm.weight", "self_attn.k_norm.weight": "self_attn.k_norm.weight"}
                if name in simple:
                    out[prefix + simple[name]] = value
                elif name == "self_attn.q_proj.weight":
                    state = model.state_dict()
                    base = f"model.language_model.layers.{layer}.self_attn."
                    out[prefix + "self_attn.att_proj.weight"] = torch.cat(
                        [state[base + f"{p}_proj.weight"] for p in "qkv"]).clone()
                elif name == "mlp.up_proj.weight":
                    state = model.state_dict()
                    base = f"model.language_model.layers.{layer}.mlp."
                    out[prefix + "mlp.ff_proj.weight"] = torch.cat(
                        [state[base + "up_proj.weight"], state[base + "gate_proj.weight"]]).clone()
        elif key.startswith("model.vision_tower."):
            rest = key.removeprefix("model.vision_tower.")
            if rest.startswith("layers."):
                layer, name = rest.removeprefix("layers.").split(".", 1)
                for ours, theirs in (("self_attn.q_proj", "attention.wq"), ("self_attn.k_proj", "attention.wk"),
                                     ("self_attn.v_proj", "attention.wv"), ("self_attn.o_proj", "attention.wo"),
                                     ("mlp.fc1", "feed_forward.w1"), ("mlp.fc2", "feed_forward.w2"),
                                     ("layer_norm1", "attention_norm"), ("layer_norm2", "ffn_norm")):
                    name = name.replace(ours, theirs)
                out[f"model.vision_backbone.image_vit.transformer.resblocks.{layer}.{name}"] = value
            else:
                out[f"model.vision_backbone.image_vit.{rest}"] = value
        elif key.startswith("model.multi_modal_projector."):
            rest = key.removeprefix("model.multi_modal_projector.")
            for ours, theirs in (("image_pooling_2d.q_proj", "image_pooling_2d.wq"),
                                 ("image_pooling_2d.k_proj", "image_pooling_2d.wk"),
                                 ("image_pooling_2d.v_proj", "image_pooling_2d.wv"),
                                 ("image_pooling_2d.o_proj", "image_pooling_2d.wo"),
                                 ("image_projector.gate_proj", "image_projector.w1"),
                                 ("image_projector.down_proj", "image_projector.w2"),
                                 ("image_projector.up_proj", "image_projector.w3")):
                rest = rest.replace(ours, theirs)
            out[f"model.vision_backbone.{rest}"] = value
        else:
            raise AssertionError(f"no released name for {key}")
    return out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def write_tokenizer_files(tokenizer: Qwen2Tokenizer, folder: Path) -> None:
    """tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, added_tokens.json, special_tokens_map.json."""
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    added = {t: vocab[t] for t in [*TEXT_SPECIALS, *IMAGE_TOKENS]}
    _write_json(folder / "vocab.json", {t: i for t, i in vocab.items() if t not in added})
    (folder / "merges.txt").write_text("#version: 0.2\n")
    _write_json(folder / "added_tokens.json", added)
    _write_json(folder / "special_tokens_map.json", {
        "additional_special_tokens": IMAGE_TOKENS, "bos_token": "<|im_end|>", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>"})
    _write_json(folder / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for t, i in added.items()},
        "additional_special_tokens": IMAGE_TOKENS,
        "auto_map": {"AutoProcessor": "processing_molmo2.Molmo2Processor"},
        "bos_token": "<|im_end|>", "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": 1010000, "pad_token": "<|endoftext|>",
        "processor_class": "Molmo2Processor", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None})


def write_tiny_molmo2(folder: Path, seed: int = 0, shards: int = 2) -> Path:
    """A tiny random Molmo2 in the released folder layout (module doc); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_tokenizer()
    config = tiny_config(tokenizer.get_vocab())
    _write_json(folder / "config.json", config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Molmo2ForConditionalGeneration(Molmo2Config.from_pretrained(folder))
    state = hub_state(model)
    keys = sorted(state)
    per_shard = math.ceil(len(keys) / shards)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[s * per_shard:(s + 1) * per_shard]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    _write_json(folder / "model.safetensors.index.json", {
        "metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
        "weight_map": weight_map})
    write_tokenizer_files(tokenizer, folder)
    vocab = tokenizer.get_vocab()
    _write_json(folder / "generation_config.json", {"bos_token_id": vocab["<|im_end|>"],
                                                    "eos_token_id": vocab["<|im_end|>"],
                                                    "pad_token_id": vocab["<|endoftext|>"],
                                                    "max_new_tokens": MAX_NEW_TOKENS})
    processor = {"auto_map": {"AutoProcessor": "processing_molmo2.Molmo2Processor"}, "image_use_col_tokens": True,
                 "processor_class": "Molmo2Processor", "use_frame_special_tokens": False,
                 "use_single_crop_col_tokens": False, "use_single_crop_start_token": True,
                 "video_use_col_tokens": False}
    _write_json(folder / "processor_config.json", processor)
    size = {"height": FRAME_SIZE, "width": FRAME_SIZE}
    _write_json(folder / "preprocessor_config.json", {
        "do_convert_rgb": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "image_processor_type":
        "Molmo2ImageProcessor", "max_crops": 2, "overlap_margins": [1, 1], "patch_size": 14, "pooling_size": [2, 2],
        "processor_class": "Molmo2Processor", "resample": 2, "size": size})
    _write_json(folder / "video_preprocessor_config.json", {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True, "do_sample_frames": True,
        "frame_sample_mode": "uniform_last_frame", "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "max_fps": 2.0,
        "num_frames": 8, "patch_size": 14, "pooling_size": POOLING, "processor_class": "Molmo2Processor",
        "resample": 2, "rescale_factor": 1 / 255, "sampling_fps": 2, "size": size,
        "video_processor_type": "Molmo2VideoProcessor"})
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


def write_tiny_sam2(path: Path, seed: int = 0) -> Path:
    """An official-layout SAM 2 checkpoint ({"model": state_dict}) of the tiny config's SAM 2."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sam = build_sam2(load_config("tiny").sam2)
    state = dict(sam.state_dict())
    state["obj_ptr_proj.layers.0.weight"] = torch.zeros(4, 4)   # official files carry object-pointer heads
    torch.save({"model": state}, path)
    return path





def write_default_sam2(path: Path) -> Path:
    """The shipped default model's trained SAM 2 as an official-layout checkpoint: masks that follow a shape."""
    from glus_ros.inference import load_model

    state = dict(load_model(DEFAULT_MODEL).sam.sam.state_dict())
    state["obj_ptr_proj.layers.0.weight"] = torch.zeros(4, 4)
    torch.save({"model": state}, path)
    return path


@contextlib.contextmanager
def answering(backend, text: str) -> Iterator[None]:
    """The backend's Molmo2 answers exactly ``text`` while inside (a random model's answers are garbage)."""
    force = ForceAnswer(backend.inputs.tokenizer, text)
    backend.logits_processor = LogitsProcessorList([force])
    backend.settings.max_new_tokens = len(force.ids)
    try:
        yield
    finally:
        backend.logits_processor = None
        backend.settings.max_new_tokens = None
