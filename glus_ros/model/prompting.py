"""Turning (context frames, query frames, expression) into the token sequence GLUS reads.

Order (GLUS Sec. 4.1, causal): context frames first, then the query frames, then the expression;
the answer holds one [SEG] per query frame. Each frame placeholder expands to the frame's visual
tokens, as LLaVA's processor does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from glus_ros.model.config import VLMConfig
from glus_ros.model.tokenizer import EXTRA_SPECIAL_TOKENS, IMAGE_TOKEN, SEG_TOKEN

IGNORE_INDEX = -100


@dataclass
class EncodedPrompt:
    input_ids: torch.Tensor     # (L,)
    labels: torch.Tensor        # (L,) answer tokens, IGNORE_INDEX elsewhere
    num_frames: int             # image placeholders, each expanded to tokens_per_frame ids


def clean_expression(expression: str, max_chars: int = 400) -> str:
    """Validate a referring expression: non-empty, bounded, no reserved tokens that would hijack the prompt."""
    if not isinstance(expression, str):
        raise ValueError(f"expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.split())
    if not text:
        raise ValueError("empty expression: say which object to segment, e.g. 'the red mug'")
    if len(text) > max_chars:
        raise ValueError(f"expression too long ({len(text)} characters, at most {max_chars})")
    for token in (IMAGE_TOKEN, SEG_TOKEN, *EXTRA_SPECIAL_TOKENS):
        if token in text:
            raise ValueError(f"expression contains the reserved token {token!r}")
    return text


class PromptBuilder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: VLMConfig, max_expression_tokens: int = 96) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.max_expression_tokens = max_expression_tokens
        self.image_id = self._token_id(IMAGE_TOKEN)
        self.seg_id = self._token_id(SEG_TOKEN)

    def _token_id(self, token: str) -> int:
        idx = self.tokenizer.convert_tokens_to_ids(token)
        if idx is None or idx == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token")
        return int(idx)

    def answer_text(self, num_query: int) -> str:
        return self.cfg.answer_template.format(seg=" ".join([SEG_TOKEN] * num_query))

    def encode(self, expression: str, num_context: int, num_query: int, answer: str | None = None,
               query_frames_shown: int | None = None) -> EncodedPrompt:
        """Token ids for one sample; ``answer`` defaults to one [SEG] per query frame.

        ``query_frames_shown`` (default ``num_query``) placeholders for query frames; 0 is the
        global-only ablation, where the MLLM sees context frames only but still answers per query frame.
        """
        shown = num_query if query_frames_shown is None else query_frames_shown
        text = clean_expression(expression)
        n_expr = len(self.tokenizer(text, add_special_tokens=False).input_ids)
        if n_expr > self.max_expression_tokens:
            raise ValueError(f"expression too long ({n_expr} tokens, at most {self.max_expression_tokens})")
        prefix = self.cfg.prompt_template.split("{answer}")[0].format(
            context="".join([self.cfg.context_frame_template] * num_context),
            query="".join([self.cfg.query_frame_template] * shown),
            expression=text,
        )
        answer = self.answer_text(num_query) if answer is None else answer
        tok = self.tokenizer
        prefix_ids = tok(prefix, add_special_tokens=False).input_ids
        answer_ids = [*tok(answer, add_special_tokens=False).input_ids, tok.eos_token_id]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids: list[int] = []
        for t in bos + prefix_ids:
            ids.extend([t] * self.cfg.tokens_per_frame if t == self.image_id else [t])
        labels = [IGNORE_INDEX] * len(ids) + answer_ids
        ids = ids + answer_ids
        frames = prefix_ids.count(self.image_id)
        if frames != num_context + shown:
            raise ValueError(f"prompt template produced {frames} frame placeholders, expected "
                             f"{num_context + shown}: check prompt_template / frame templates")
        return EncodedPrompt(torch.tensor(ids), torch.tensor(labels), frames)

    def batch(self, prompts: list[EncodedPrompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-pad to one (B, L) batch: ids, attention mask, labels."""
        length = max(len(p.input_ids) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        labels = torch.full((len(prompts), length), IGNORE_INDEX, dtype=torch.long)
        for i, p in enumerate(prompts):
            n = len(p.input_ids)
            ids[i, :n], mask[i, :n], labels[i, :n] = p.input_ids, 1, p.labels
        return ids, mask, labels
