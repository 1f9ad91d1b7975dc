"""The context prefix cache: same prompts as an uncached pass, hits only for the same context (tiny model)."""

from __future__ import annotations

import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.model.glus import GLUSModel
from glus_ros.model.prefix_cache import ContextPrefixCache, context_prefix_length
from glus_ros.streaming import EngineConfig, StreamFrame, StreamingEngine, TargetSpec

from helpers_model import MethodSpy, moving_disk_clip

EXPRESSIONS = ["the red disk", "the dark noise on the left"]


@pytest.fixture(scope="module")
def model() -> GLUSModel:
    torch.manual_seed(0)
    return load_model("tiny", overrides={"vlm": {"grounding_map": True, "grounding_spatial": True,
                                                 "grounding_motion": 4}}).eval()


def frames(model: GLUSModel, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = model.cfg.vlm.image_size
    pixels = torch.randn(n, 3, size, size, generator=generator)
    with torch.inference_mode():
        return pixels, model.encode_clip_frames(pixels)


def run(model: GLUSModel, context: torch.Tensor, query: torch.Tensor, pixels: torch.Tensor,
        cache: ContextPrefixCache | None):
    batch = len(EXPRESSIONS)
    with torch.inference_mode():
        return model.seg_prompts(context[None].expand(batch, -1, -1, -1), query[None].expand(batch, -1, -1, -1),
                                 EXPRESSIONS, context_pixels=pixels[None].expand(batch, -1, -1, -1, -1),
                                 prefix_cache=cache)


def test_the_prefix_is_the_prompt_up_to_the_first_query_frame(model: GLUSModel) -> None:
    prompts = model.prompts
    ids = prompts.encode("the red disk", 4, 4).input_ids.tolist()
    tokens = model.cfg.vlm.tokens_per_frame
    images = [i for i, t in enumerate(ids) if t == prompts.image_id]
    length = context_prefix_length(prompts, 4, 4, 4)
    assert length == images[4 * tokens]  # right before the first token of the first query frame
    assert sum(1 for i in images if i < length) == 4 * tokens
    assert context_prefix_length(prompts, 0, 4, 4) == 0  # nothing to reuse without context frames


def test_a_template_that_puts_the_expression_first_has_no_reusable_prefix() -> None:
    expression_first = load_model("tiny", overrides={"vlm": {
        "prompt_template": "expression: {expression} context: {context} query: {query} answer: {answer}"}}).eval()
    assert context_prefix_length(expression_first.prompts, 4, 4, 4) == 0
    _pixels, embeds = frames(expression_first, 8)
    cache = ContextPrefixCache()
    with torch.inference_mode():
        plain = expression_first.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red disk"])
        cached = expression_first.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red disk"], prefix_cache=cache)
    assert torch.equal(plain.prompts, cached.prompts) and cache.hits == cache.misses == 0


def test_cached_and_uncached_regroundings_give_the_same_prompts(model: GLUSModel) -> None:
    pixels, embeds = frames(model, 12)
    cache = ContextPrefixCache()
    context, context_pixels = embeds[:4], pixels[:4]
    for start in (4, 5, 8):  # the query window moves on, the context stays: a re-grounding in a stream
        query = embeds[start:start + 4]
        plain = run(model, context, query, context_pixels, None)
        cached = run(model, context, query, context_pixels, cache)
        for name in ("prompts", "seg_hidden", "logits", "grounding", "query_states"):
            assert torch.allclose(getattr(plain, name), getattr(cached, name), atol=1e-4), name
    assert (cache.misses, cache.hits) == (1, 2)  # the context's keys/values were computed once
    # other context frames: a miss, and still the uncached result
    other_pixels, other = frames(model, 4, seed=1)
    plain = run(model, other, embeds[4:8], other_pixels, None)
    cached = run(model, other, embeds[4:8], other_pixels, cache)
    assert torch.allclose(plain.prompts, cached.prompts, atol=1e-4) and cache.misses == 2
    assert not torch.allclose(plain.prompts, run(model, context, embeds[4:8], context_pixels, None).prompts,
                              atol=1e-3)


def test_training_never_uses_the_cache(model: GLUSModel) -> None:
    pixels, embeds = frames(model, 8)
    cache = ContextPrefixCache()
    model.train()
    try:
        out = model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red disk"], context_pixels=pixels[None, :4],
                                prefix_cache=cache)
    finally:
        model.eval()
    assert out.prompts.requires_grad and cache.hits == cache.misses == 0


class Prompts(MethodSpy):
    def __init__(self, model: GLUSModel) -> None:
        super().__init__(model, "seg_prompts")
        self.prompts: list[torch.Tensor] = []

    def __call__(self, *args, **kwargs):
        out = self.original(*args, **kwargs)
        self.prompts.append(out.prompts)
        return out


def test_the_engine_gives_the_same_prompts_with_and_without_its_prefix_cache(model: GLUSModel) -> None:
    clip = moving_disk_clip(10, 96, 128)
    seen = []
    for cached in (True, False):
        engine = StreamingEngine(model, EngineConfig(schedule="full", context_refresh=4, prefix_cache=cached))
        for text in EXPRESSIONS:
            engine.add_target(TargetSpec("", text))
        with Prompts(model) as spy:
            for i, image in enumerate(clip):
                engine.process(StreamFrame(image, stamp=float(i)))
        seen.append((spy.prompts, engine.grounding_stats))
    (with_cache, stats), (without, plain_stats) = seen
    assert len(with_cache) == len(without) == len(clip)
    for a, b in zip(with_cache, without, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert stats["prefix_hits"] >= 4 and stats["prefix_misses"] <= 6  # kept context frames are reused
    assert plain_stats["prefix_hits"] == plain_stats["prefix_misses"] == 0
