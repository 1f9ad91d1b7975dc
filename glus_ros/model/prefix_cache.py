"""Reusing the context frames' MLLM work across re-groundings of a stream.

In a live stream the context frames change far more slowly than the query window: a re-grounding sees the
same context frames (and the same prompt text before the query frames) as the previous one, and only the
newest query frames and the expression are new. Where the prompt puts the context frames first (the GLUS
order, ``prompting.py``), the LLM's keys and values over that prefix do not depend on the expression or the
query frames (attention is causal), so they are computed once and every later pass runs the LLM over the
rest of the sequence only. The context frames' motion field (``vlm.grounding_motion``) is cached the same
way. The vision tower's per-frame embeddings are cached by the callers (``StreamingEngine``,
``core.frames.FrameEncoder``), per frame.

What is a prefix is found from the prompt builder itself, not assumed: the longest run of token ids that
prompts for two different probe expressions share, cut before the first query frame; a template without
all context frames in that run has no reusable prefix and runs uncached. A cached entry is used only when
the prefix ids, the embeddings placed in it (context frames included) and the task adapter are the same,
compared exactly, so a hit gives the uncached result up to float rounding (tested).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from glus_ros.model.prompting import PromptBuilder

# two probe expressions that share no first character: their prompts part where the expression begins
_PROBES = ("a", "zq xv")


def context_prefix_length(prompts: PromptBuilder, num_context: int, num_query: int, shown: int) -> int:
    """Tokens at the start of every prompt with these frame counts that do not depend on the expression and
    end before the first query frame; 0 when they do not hold all context frames (nothing worth caching)."""
    if num_context == 0:
        return 0
    seqs = [prompts.encode(p, num_context, num_query, query_frames_shown=shown).input_ids.tolist() for p in _PROBES]
    common = next((i for i, (x, y) in enumerate(zip(*seqs, strict=False)) if x != y), min(map(len, seqs)))
    images = [i for i, t in enumerate(seqs[0]) if t == prompts.image_id]
    context_tokens = num_context * prompts.cfg.tokens_per_frame
    end = images[context_tokens] if len(images) > context_tokens else len(seqs[0])
    length = min(common, end)
    return length if sum(1 for i in images if i < length) == context_tokens else 0


@dataclass(eq=False)
class _Prefix:
    task: str | None
    embeds: torch.Tensor                          # (P, D) the prefix's input embeddings (ids and frames)
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, kv_heads, P, head_dim)
    hidden: tuple[torch.Tensor, ...]              # per hidden-states index (1, P, D)
    logits: torch.Tensor                          # (1, P, vocab)


def _cache_argument(language_model: torch.nn.Module) -> str:
    """The name under which this transformers version takes a KV cache (``cache`` from 5.x, else the old one)."""
    names = inspect.signature(language_model.forward).parameters
    return "cache" if "cache" in names else "past_key_values"


class ContextPrefixCache:
    """The last ``entries`` context prefixes (LLM keys/values, hidden states, logits) and motion fields.

    Not thread-safe: one user at a time (the engine's grounding worker, or one offline loop).
    """

    def __init__(self, entries: int = 2) -> None:
        if entries < 1:
            raise ValueError(f"a prefix cache needs at least one entry, got {entries}")
        self.entries = entries
        self._prefixes: list[_Prefix] = []
        self._motion: list[tuple[str | None, torch.Tensor, torch.Tensor]] = []  # (task, context pixels, field)
        self._lengths: dict[tuple[int, int, int], int] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._prefixes.clear()
        self._motion.clear()

    def prefix_length(self, prompts: PromptBuilder, num_context: int, num_query: int, shown: int) -> int:
        key = (num_context, num_query, shown)
        if key not in self._lengths:
            self._lengths[key] = context_prefix_length(prompts, num_context, num_query, shown)
        return self._lengths[key]

    def motion(self, context_pixels: torch.Tensor, compute: Callable[[], torch.Tensor | None],
               task: str | None = None) -> torch.Tensor | None:
        """The motion field of these context pixels (B, Nc, 3, S, S) under ``task``'s adapter (which may swap the
        field's weights): cached for pixels seen before."""
        for known, pixels, field in self._motion:
            if known == task and pixels.shape == context_pixels.shape and torch.equal(pixels, context_pixels):
                return field
        field = compute()
        if field is not None:
            self._motion = [(task, context_pixels, field), *self._motion][: self.entries]
        return field

    def run(self, vlm: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, frames: torch.Tensor, length: int,
            task: str | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """What ``vlm(ids, mask, frames)`` returns, with the first ``length`` tokens (shared by every row) taken
        from the cache when the same prefix was run before: (logits, hidden_states)."""
        batch = ids.shape[0]
        if length < 1 or length >= ids.shape[1] or not bool((ids[:, :length] == ids[:1, :length]).all()) \
                or not bool(mask[:, :length].all()):
            return vlm(ids, mask, frames)
        embeds = vlm.input_embeddings(ids, frames)
        prefix = self._lookup(embeds[0, :length], task)
        if prefix is None:
            prefix = self._compute(vlm, embeds[:1, :length], task)
        language_model = vlm.language_model
        cache = DynamicCache()
        for layer, (k, v) in enumerate(prefix.keys_values):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
        out = language_model(inputs_embeds=embeds[:, length:], attention_mask=mask, use_cache=True,
                             output_hidden_states=True, **{_cache_argument(language_model): cache})
        hidden = tuple(torch.cat([p.expand(batch, -1, -1), h], dim=1)
                       for p, h in zip(prefix.hidden, out.hidden_states, strict=True))
        logits = torch.cat([prefix.logits.expand(batch, -1, -1), vlm.llava.lm_head(out.hidden_states[-1])], dim=1)
        return logits, hidden

    def _lookup(self, embeds: torch.Tensor, task: str | None) -> _Prefix | None:
        for prefix in self._prefixes:
            if prefix.task == task and prefix.embeds.shape == embeds.shape and torch.equal(prefix.embeds, embeds):
                self.hits += 1
                return prefix
        return None

    def _compute(self, vlm: torch.nn.Module, embeds: torch.Tensor, task: str | None) -> _Prefix:
        self.misses += 1
        language_model = vlm.language_model
        cache = DynamicCache()
        ones = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        out = language_model(inputs_embeds=embeds, attention_mask=ones, use_cache=True, output_hidden_states=True,
                             **{_cache_argument(language_model): cache})
        keys_values = [(layer.keys, layer.values) for layer in cache.layers]
        prefix = _Prefix(task, embeds[0], keys_values, tuple(out.hidden_states),
                         vlm.llava.lm_head(out.hidden_states[-1]))
        self._prefixes = [prefix, *self._prefixes][: self.entries]
        return prefix

    def final_state(self, language_model: torch.nn.Module, embeds: torch.Tensor, length: int) -> torch.Tensor:
        """The final-norm hidden state at the last position of ``language_model(inputs_embeds=embeds)`` (1, L, D),
        with the keys/values of the first ``length`` positions taken from the cache when the same prefix embeddings
        were run before. For the released weights' conversation, whose prompt starts with the system prompt and the
        first turn's context frames; the expression and the query frames come after them, so the prefix's keys and
        values are the same for every step of a stream that keeps its context frames.
        """
        if not 0 < length < embeds.shape[1]:
            return language_model(inputs_embeds=embeds, use_cache=False).last_hidden_state[0, -1]
        prefix = self._lookup(embeds[0, :length], _CONVERSATION)
        if prefix is None:
            self.misses += 1
            cache = DynamicCache()
            language_model(inputs_embeds=embeds[:, :length], use_cache=True,
                           **{_cache_argument(language_model): cache})
            prefix = _Prefix(_CONVERSATION, embeds[0, :length], [(layer.keys, layer.values) for layer in cache.layers],
                             (), embeds.new_empty(0))
            self._prefixes = [prefix, *self._prefixes][: self.entries]
        cache = DynamicCache()
        for layer, (k, v) in enumerate(prefix.keys_values):
            cache.update(k, v, layer)
        out = language_model(inputs_embeds=embeds[:, length:], use_cache=True,
                             **{_cache_argument(language_model): cache})
        return out.last_hidden_state[0, -1]


_CONVERSATION = "<llava_v1 conversation>"  # the task key of conversation prefixes (never a task adapter's name)
