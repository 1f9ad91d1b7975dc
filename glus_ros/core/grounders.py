"""The MLLM step of the window loop in each prompt format: context frames + a window of query frames + an
expression in, a SAM 2 prompt per decoded frame out.

* :class:`CompactGrounder` (``loop.prompt_format: compact``, the project's own family): one pass over
  [context frames, query frames, expression, answer] gives a [SEG] state, hence a prompt, for every query frame
  (and the grounding map's logits where the model has one).
* :class:`ConversationGrounder` (``llava_v1``, the released GLUS weights): the llava_v1 multi-turn conversation
  with one query frame per turn; one token is generated for the newest frame, and only a ``[SEG]`` answer gives
  a prompt: ``text_hidden_fcs`` of the final-norm state at the last prompt position (the state that predicted
  it). Any other token means "no mask on this frame" (the official loop writes an empty mask and no memory).

Both read visual tokens from a :class:`~glus_ros.core.frames.FrameEncoder`, so the frames' preprocessing and
caching are the same whichever format runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from glus_ros.core.frames import FrameEncoder
from glus_ros.model.glus import GLUSModel
from glus_ros.model.official_prompt import IMAGE_PLACEHOLDER, OfficialConversation
from glus_ros.model.prefix_cache import ContextPrefixCache


@dataclass
class FramePrompt:
    """The MLLM's answer for one decoded frame: a SAM 2 sparse prompt (1, prompt_dim), or None when the model did
    not answer [SEG] for it; the grounding map's (1, G, G) logits where the model has one."""

    prompt: torch.Tensor | None
    grid: torch.Tensor | None = None


@dataclass
class WindowAnswer:
    """What one MLLM step produced: a :class:`FramePrompt` per decoded frame, and, for the conversation, what the
    parity trace compares (prompt ids with IMAGE_PLACEHOLDER per frame, the generated token, the hidden state)."""

    frames: dict[int, FramePrompt] = field(default_factory=dict)
    input_ids: list[int] | None = None
    token: int | None = None
    hidden: torch.Tensor | None = None


def padded(window: Sequence[int], size: int) -> list[int]:
    """A window of ``size`` frames: a short one (a video shorter than the window) repeats its last frame."""
    frames = list(window)
    while len(frames) < size:
        frames.append(frames[-1])
    return frames


class CompactGrounder:
    """The own family's MLLM step (``loop.prompt_format: compact``)."""

    def __init__(self, model: GLUSModel, encoder: FrameEncoder) -> None:
        self.model = model
        self.encoder = encoder

    def ground(self, context: Sequence[int], window: Sequence[int], decode: Sequence[int], expression: str,
               prefix_cache: ContextPrefixCache | None = None) -> WindowAnswer:
        num_query = self.model.cfg.sampling.num_query
        query = padded(window, num_query)
        context = list(context)
        embeds = self.encoder.frame_tokens(context + query)
        context_pixels = self.encoder.context_pixels(context) if context else None
        out = self.model.seg_prompts(embeds[None, :len(context)], embeds[None, len(context):], [expression],
                                     context_pixels=context_pixels, prefix_cache=prefix_cache)
        answer = WindowAnswer()
        for frame in decode:
            slot = query.index(frame)
            grid = out.grounding[:, slot] if out.grounding is not None else None
            answer.frames[frame] = FramePrompt(out.prompts[:, slot], grid)
        return answer


class ConversationGrounder:
    """The released weights' MLLM step (``loop.prompt_format: llava_v1``): one generated token per step.

    ``encoder`` gives the frames' visual tokens for :meth:`ground` (offline); the streaming engine, which keeps
    its own per-frame tokens, calls :meth:`step` with them.
    """

    def __init__(self, model: GLUSModel, encoder: FrameEncoder | None, expression: str) -> None:
        self.model = model
        self.encoder = encoder
        self.conversation = OfficialConversation(model.tokenizer, expression)

    @property
    def seg_id(self) -> int:
        return self.conversation.seg_id

    def ground(self, context: Sequence[int], window: Sequence[int], decode: Sequence[int], expression: str = "",
               prefix_cache: ContextPrefixCache | None = None) -> WindowAnswer:
        """``window``: the query frames shown as consecutive turns, oldest first; its newest frame is decoded.

        ``expression`` is the one the grounder was made for (the conversation holds it); ``prefix_cache`` reuses
        the system prompt + first turn's context frames across steps (:meth:`answer`).
        """
        if list(decode) != [window[-1]]:
            raise ValueError(f"the conversation decodes the newest query frame only, asked for {list(decode)}")
        if self.encoder is None:
            raise ValueError("ground() reads frames through a FrameEncoder; give one, or call step()")
        tokens = self.encoder.frame_tokens([*context, *window])
        answer = self.step(list(tokens), len(context), len(window), prefix_cache)
        answer.frames = {window[-1]: answer.frames[-1]}
        return answer

    def step(self, frame_tokens: Sequence[torch.Tensor], num_context: int, turns: int,
             prefix_cache: ContextPrefixCache | None = None) -> WindowAnswer:
        """One official step on the visual tokens of the context frames then ``turns`` query frames: the answer
        for the newest query frame is under key -1 of ``frames`` (a prompt only when the token is [SEG])."""
        ids = self.conversation.ids(turns)
        token, hidden = self.answer(ids, frame_tokens, num_context, prefix_cache)
        prompt = None
        if token == self.seg_id:
            projection = self.model.seg_projection
            prompt = projection(hidden.to(next(projection.parameters()).dtype))[None]
        return WindowAnswer({-1: FramePrompt(prompt)}, list(ids), token, hidden)

    def answer(self, input_ids: Sequence[int], frame_tokens: Sequence[torch.Tensor], num_context: int = 0,
               prefix_cache: ContextPrefixCache | None = None) -> tuple[int, torch.Tensor]:
        """(generated token, final-norm hidden state at the last prompt position) for one prompt."""
        vlm = self.model.vlm
        lm = vlm.language_model
        ids = torch.tensor(list(input_ids), device=self.model.device)
        images = (ids == IMAGE_PLACEHOLDER).nonzero().flatten().tolist()
        if len(images) != len(frame_tokens):
            raise ValueError(f"prompt has {len(images)} image placeholders, {len(frame_tokens)} frames given")
        parts, start = [], 0
        for pos, tokens in zip(images, frame_tokens, strict=True):
            parts.append(lm.embed_tokens(ids[start:pos]))
            parts.append(tokens.to(parts[-1].dtype))
            start = pos + 1
        parts.append(lm.embed_tokens(ids[start:]))
        embeds = torch.cat(parts)[None]
        if prefix_cache is not None and num_context:
            # the prefix: everything up to the first turn's last context frame (system prompt + context frames)
            length = sum(p.shape[0] for p in parts[:2 * num_context])
            hidden = prefix_cache.final_state(lm, embeds, length)
        else:
            hidden = lm(inputs_embeds=embeds, use_cache=False).last_hidden_state[0, -1]
        logits = vlm.llava.lm_head(hidden)
        return int(logits.argmax()), hidden


def make_grounder(model: GLUSModel, encoder: FrameEncoder, expression: str) -> CompactGrounder | ConversationGrounder:
    """The grounder of the model's ``loop.prompt_format``."""
    if model.cfg.loop.prompt_format == "llava_v1":
        return ConversationGrounder(model, encoder, expression)
    return CompactGrounder(model, encoder)
