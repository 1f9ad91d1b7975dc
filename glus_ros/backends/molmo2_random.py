"""A random-init Molmo2 without any download: for tests (tiny) and latency benchmarks (released sizes).

- ``byte_tokenizer``: a byte-level BPE without merges (the 256 byte symbols), Qwen's chat tokens, then
  Molmo2's image tokens right after the base vocabulary, as in the released tokenizers;
- ``CHAT_TEMPLATE``: the project's own Jinja template for the prompt format the released
  ``chat_template.jinja`` writes for one user turn (images / videos first, then the turns):
  ``"<|video|><|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n"``;
- ``RELEASED_4B``: the sizes of allenai/Molmo2-4B's ``config.json`` (its released key layout);
- ``random_backend``: a ``Molmo2Backend`` around a random model of a config, in memory;
- ``ForceAnswer``: greedy decoding that writes a given text (a known answer from a random model).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from tokenizers import pre_tokenizers
from transformers import LogitsProcessor
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

TEXT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "|<EXTRA_TOKENS_0>|"]
IMAGE_TOKENS = ["<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<low_res_im_start>", "<|image|>", "<im_low>",
                "<frame_start>", "<frame_end>", "<|video|>"]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- if message['content'] is not string -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' -%}{{ '<|video|>' }}{%- elif part['type'] == 'image' -%}{{ '<|image|>' }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
    " | join(' ') -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{ '<|im_start|>user\\n' + text + '<|im_end|>\\n' }}"
    "{%- else -%}{{ '<|im_start|>assistant\\n' + text }}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# allenai/Molmo2-4B config.json (released keys; 27 ViT layers declared, 25 in the weights)
RELEASED_4B: dict[str, Any] = {
    "model_type": "molmo2",
    "vit_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                   "num_key_value_heads": 16, "head_dim": 72, "hidden_act": "gelu_pytorch_tanh",
                   "layer_norm_eps": 1e-6, "image_default_input_size": [378, 378], "image_patch_size": 14,
                   "image_num_pos": 729},
    "adapter_config": {"hidden_size": 1152, "intermediate_size": 9728, "num_attention_heads": 16,
                       "num_key_value_heads": 16, "head_dim": 72, "hidden_act": "silu", "text_hidden_size": 2560,
                       "vit_layers": [-3, -9]},
    "text_config": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                    "additional_vocab_size": 128, "hidden_act": "silu", "layer_norm_eps": 1e-6,
                    "max_position_embeddings": 36864, "qk_norm_type": "qwen3", "qkv_bias": False, "norm_after": False,
                    "rope_theta": 5000000.0},
    "tie_word_embeddings": False,
}


def byte_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE without merges; image tokens get the ids right after the base vocabulary."""
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in TEXT_SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], bos_token="<|im_end|>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", unk_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    return tokenizer


def with_token_ids(config: dict[str, Any], tokenizer: Qwen2Tokenizer) -> dict[str, Any]:
    """A config whose image-token ids are the tokenizer's (a random model: any rows of the embedding do)."""
    ids = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS)
    by_name = dict(zip(IMAGE_TOKENS, ids, strict=True))
    out = copy.deepcopy(config)
    out.update(image_start_token_id=by_name["<im_start>"], image_end_token_id=by_name["<im_end>"],
               image_patch_id=by_name["<im_patch>"], low_res_image_start_token_id=by_name["<low_res_im_start>"],
               frame_start_token_id=by_name["<frame_start>"], frame_end_token_id=by_name["<frame_end>"])
    return out


def random_backend(config: dict[str, Any], sam2_node: dict[str, Any], device: str = "cpu",
                   dtype: torch.dtype = torch.float32, seed: int = 0, max_new_tokens: int = 64):
    """A ``Molmo2Backend`` around a random model of ``config`` (released keys) and a random SAM 2 tracker."""
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    from glus_ros.backends.molmo2 import Molmo2Backend, Molmo2Settings
    from glus_ros.backends.molmo2_folder import Molmo2Folder
    from glus_ros.backends.molmo2_inputs import Molmo2Inputs, TokenLayout, VideoProcessing
    from glus_ros.model.config import MemoryConfig
    from glus_ros.model.sam2_tracker import SAM2Tracker, TrackerConfig

    tokenizer = byte_tokenizer()
    full = with_token_ids(config, tokenizer)
    vit = full["vit_config"]
    size = int(vit["image_default_input_size"][0])
    video = VideoProcessing(size=size, patch_size=int(vit["image_patch_size"]))
    layout = TokenLayout(use_frame_special_tokens=False)
    folder = Molmo2Folder(Path("<random>"), full, video, layout, CHAT_TEMPLATE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = Molmo2ForConditionalGeneration(Molmo2Config.from_dict(full)).to(dtype)
        tracker = SAM2Tracker(TrackerConfig(sam2_node, MemoryConfig())).to(device)
    inputs = Molmo2Inputs(folder.path, tokenizer, CHAT_TEMPLATE, video, layout, "own")
    settings = Molmo2Settings(max_new_tokens=max_new_tokens)
    return Molmo2Backend(model.eval(), inputs, tracker, settings, folder)


class ForceAnswer(LogitsProcessor):
    """Greedy decoding that writes exactly ``text`` (then EOS), whatever the model prefers."""

    def __init__(self, tokenizer, text: str) -> None:
        self.ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.start: int | None = None
        self.last = -1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if self.start is None or length != self.last + 1:   # a new generation
            self.start = length
        self.last = length
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.ids[min(length - self.start, len(self.ids) - 1)]] = 0.0
        return forced
