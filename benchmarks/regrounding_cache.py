"""MLLM re-grounding time with and without reusing the context (ROS-free): prints numbers, asserts nothing.

A re-grounding in a stream sees the same context frames as the one before and a query window moved on by
one frame. Without the cache it runs the vision tower on all context + query frames, the motion field
(models that have one) and the LLM over the whole prompt; with it, the vision tower on the one new query
frame (the others' embeddings are kept per frame, as the engine does), the motion field and the LLM's
keys/values over the context prefix from the cache (``glus_ros/model/prefix_cache.py``), the LLM over the
rest. Both in the same run, alternating; the ratio is printed, with the prompts' largest difference.

    .venv/bin/python benchmarks/regrounding_cache.py [--model glus-tiny-synth] [--repeats 20]
    .venv/bin/python benchmarks/regrounding_cache.py --model glus-s --random-bf16 --repeats 1   # ~15 GB RAM

``--random-bf16`` builds the model with random weights directly in bf16 (no fp32 copy: 7B parameters
take ~14 GB instead of ~28 GB) for sizes whose weights are not here; only the time means something then.
A config with an ``official`` section (glus-s, glus-a: the released weights' conversation) is built with
glus_ros's own prompt format and tokenizer, whose prompt puts the context frames first as GLUS does.
``--llm-layers K`` keeps K of the LLM's layers (every layer has the same shape): the time of the whole
depth is then printed as well, extrapolated layer for layer from the measured LLM part.

    .venv/bin/python benchmarks/regrounding_cache.py --model glus-s --random-bf16 --llm-layers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from glus_ros.model.config import DEFAULT_MODEL, load_config


def random_bf16_model(spec: str, llm_layers: int = 0):
    """The model of ``spec`` with random weights made in bf16 from the start (the builtin tokenizer, glus_ros's
    own prompt format; ``llm_layers`` > 0: that many LLM layers)."""
    from glus_ros.model.glus import GLUSModel

    vlm: dict = {"tokenizer": "builtin"}
    if llm_layers:
        vlm["text"] = {"num_hidden_layers": llm_layers}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        torch.manual_seed(0)
        model = GLUSModel.from_config(spec, overrides={"official": None, "vlm": vlm})
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--random-bf16", action="store_true", help="random weights built in bf16 (large sizes)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--llm-layers", type=int, default=0,
                        help="--random-bf16: keep this many LLM layers and extrapolate to the config's depth")
    parser.add_argument("--expression", default="the red circle that moves to the left")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from glus_ros.inference import load_model
    from glus_ros.model.prefix_cache import ContextPrefixCache

    t0 = time.perf_counter()
    if args.llm_layers and not args.random_bf16:
        raise SystemExit("--llm-layers needs --random-bf16")
    model = random_bf16_model(args.model, args.llm_layers) if args.random_bf16 else load_model(args.model).eval()
    built_s = time.perf_counter() - t0
    dtype = next(model.parameters()).dtype
    params = sum(p.numel() for p in model.parameters())
    cfg = model.cfg
    nc, nq, size = cfg.sampling.num_context, cfg.sampling.num_query, cfg.vlm.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(nc + nq + args.repeats + 1, 3, size, size, generator=generator).to(dtype)
    context = pixels[:nc]
    prompt_len = len(model.prompts.encode(args.expression, nc, nq).input_ids)
    cache = ContextPrefixCache()
    prefix = cache.prefix_length(model.prompts, nc, nq, nq)
    print(f"model {args.model}: {params / 1e6:.1f} M parameters ({dtype}, built in {built_s:.0f} s), torch threads "
          f"{torch.get_num_threads()}; prompt {prompt_len} tokens, context prefix {prefix}")

    def query_pixels(k: int) -> torch.Tensor:
        return pixels[nc + k:nc + k + nq]

    # bf16 weights run under autocast, as --dtype bf16 does (the heads read float [SEG] states)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with torch.inference_mode(), autocast:
        kept = {"context": model.encode_clip_frames(context), "query": model.encode_clip_frames(query_pixels(0))}

        vision_s: dict[str, list[float]] = {"plain": [], "cached": []}
        layers_s: list[float] = []   # the language model's decoder stack, per call (what --llm-layers cuts)
        language_model = model.vlm.language_model
        stack = language_model.forward

        def timed_stack(*a, **kw):
            t0 = time.perf_counter()
            out = stack(*a, **kw)
            layers_s.append(time.perf_counter() - t0)
            return out

        language_model.forward = timed_stack

        def uncached(k: int):
            t0 = time.perf_counter()
            embeds = model.encode_clip_frames(torch.cat([context, query_pixels(k)]))
            vision_s["plain"].append(time.perf_counter() - t0)
            return model.seg_prompts(embeds[None, :nc], embeds[None, nc:], [args.expression],
                                     context_pixels=context[None]).prompts

        def cached(k: int):
            t0 = time.perf_counter()
            newest = model.encode_clip_frames(query_pixels(k)[-1:])   # the one new frame
            vision_s["cached"].append(time.perf_counter() - t0)
            query = torch.cat([kept["query"][1:], newest])
            kept["query"] = query
            return model.seg_prompts(kept["context"][None], query[None], [args.expression],
                                     context_pixels=context[None], prefix_cache=cache).prompts

        model.seg_prompts(kept["context"][None], kept["query"][None], [args.expression],  # the re-grounding before:
                          context_pixels=context[None], prefix_cache=cache)              # fills the cache
        plain_s, cached_s, diff = [], [], 0.0
        stack_s: dict[str, list[float]] = {"plain": [], "cached": []}
        for k in range(1, args.repeats + 1):
            layers_s.clear()
            t0 = time.perf_counter()
            a = uncached(k)
            plain_s.append(time.perf_counter() - t0)
            stack_s["plain"].append(sum(layers_s))
            layers_s.clear()
            t0 = time.perf_counter()
            b = cached(k)
            cached_s.append(time.perf_counter() - t0)
            stack_s["cached"].append(sum(layers_s))
            diff = max(diff, float((a.float() - b.float()).abs().max()))
    plain, fast = statistics.median(plain_s) * 1000, statistics.median(cached_s) * 1000
    vision = {k: statistics.median(v) * 1000 for k, v in vision_s.items()}
    print(f"re-grounding: without the cache {plain:.1f} ms, with it {fast:.1f} ms: {plain / fast:.2f}x "
          f"(median of {args.repeats}; prefix hits {cache.hits}, misses {cache.misses}; "
          f"largest prompt difference {diff:.2e})")
    print(f"  of which the vision tower: {vision['plain']:.1f} ms ({nc + nq} frames) against {vision['cached']:.1f} ms "
          f"(the new frame); the MLLM pass and heads {plain - vision['plain']:.1f} ms against "
          f"{fast - vision['cached']:.1f} ms")
    stack = {k: statistics.median(v) * 1000 for k, v in stack_s.items()}
    print(f"  the LLM's decoder layers: {stack['plain']:.1f} ms against {stack['cached']:.1f} ms")
    if args.llm_layers:
        depth = load_config(args.model).vlm.text["num_hidden_layers"]
        scale = depth / args.llm_layers
        full_plain = plain + stack["plain"] * (scale - 1)
        full_fast = fast + stack["cached"] * (scale - 1)
        print(f"extrapolated to the config's {depth} LLM layers (the decoder layers' time x {scale:g}, the rest as "
              f"measured): without the cache {full_plain / 1000:.1f} s, with it {full_fast / 1000:.1f} s: "
              f"{full_plain / full_fast:.2f}x")


if __name__ == "__main__":
    main()
