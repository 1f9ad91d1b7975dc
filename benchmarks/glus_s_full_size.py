"""GLUS-S at its real size (Llama-7B + CLIP ViT-L/14 + SAM 2 hiera-L) with random weights: load and one window.

No download and no real weights: the benchmark writes a random GLUS-S in the release's layout (bf16
``pytorch_model-0000N-of-0000M.bin`` shards + index, config.json, a 32000-piece SentencePiece tokenizer with
the four added tokens, and a separate CLIP folder), then loads it the way ``glus-ros segment --model glus-s``
does, in a fresh process, and runs the official inference's steps for one full query window. It prints the
load time and peak host RAM (RSS) of loading, and the time of each step. Prints numbers, asserts nothing.

    .venv/bin/python benchmarks/glus_s_full_size.py --release /tmp/glus_s_random [--device cpu|cuda]
        [--dtype bf16] [--frames 0]

The written release is reused by later runs (delete the folder to rewrite it; about 15 GB). Building it
never holds a float32 copy of the LLM (meta device, then bf16 tensors). ``--frames N`` also segments an
N-frame video with the official loop (s/frame, MLLM windows/s, SAM 2 tracker frames/s; meant for a GPU).
Needs about 16 GB of free RAM on CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHARD_BYTES = 10 * 1024**3  # transformers 4.31 save_pretrained's default max_shard_size ("10GB")
OFFICIAL_NAMES = [  # our module prefix -> the release's (GLUSForCausalLM) prefix
    ("sam.sam.", "model.visual_model."),
    ("seg_projection.", "model.text_hidden_fcs.0."),
    ("vlm.llava.model.multi_modal_projector.", "model.mm_projector."),
    ("vlm.llava.model.language_model.", "model."),
    ("vlm.llava.lm_head.", "lm_head."),
]
ADDED = ["<im_patch>", "<im_start>", "<im_end>", "[SEG]"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_tokenizer(folder: Path, pieces: int = 32000) -> None:
    """A SentencePiece model with LLaMA's layout (unk, bos, eos, 256 byte pieces, then words) and its size."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = pieces
    proto.trainer_spec.byte_fallback = True
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    kinds = pb.ModelProto.SentencePiece

    def add(text: str, kind, score: float = 0.0) -> None:
        piece = proto.pieces.add()
        piece.piece, piece.type, piece.score = text, kind, score

    add("<unk>", kinds.UNKNOWN)
    add("<s>", kinds.CONTROL)
    add("</s>", kinds.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", kinds.BYTE)
    words = "a an the of in on to is are this that frame segment can you please sure result".split()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(",.?:'ASUERTNI")
    base = list(dict.fromkeys(["\u2581" + w for w in words] + ["\u2581" + c for c in letters] + letters))
    i = 0
    while len(proto.pieces) < pieces:
        add(base[i] if i < len(base) else f"\u2581w{i}", kinds.NORMAL, -float(i))
        i += 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    (folder / "added_tokens.json").write_text(json.dumps({t: pieces + k for k, t in enumerate(ADDED)}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": False,
                                                              "legacy": True, "tokenizer_class": "LlamaTokenizer"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                                "unk_token": "<unk>", "pad_token": "<unk>"}))


def materialise_random(model: nn.Module, dtype: torch.dtype, device: torch.device, std: float = 0.02) -> None:
    """Give the meta-device LLM random ``dtype`` tensors, one at a time (never a float32 copy)."""
    from glus_ros.model.official_checkpoint import _restore_rotary

    generator = torch.Generator(device=device).manual_seed(0)
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                data = torch.empty(param.shape, dtype=dtype, device=device)
                if name == "weight" and data.dim() == 1:
                    data.fill_(1.0)  # norms
                else:
                    data.normal_(0.0, std, generator=generator)
                module._parameters[name] = nn.Parameter(data, requires_grad=False)
    _restore_rotary(model)


def write_release(folder: Path, overrides: dict | None) -> None:
    """A random GLUS-S in the release layout (run in a child process so the loader's RAM is measured alone)."""
    from glus_ros.model.config import load_config
    from glus_ros.model.glus import GLUSModel
    from glus_ros.model.llama_tokenizer import LlamaSentencePieceTokenizer

    t0 = time.perf_counter()
    ckpt, clip = folder / "checkpoint", folder / "clip"
    cfg = load_config("glus-s", overrides)
    write_tokenizer(ckpt, int(cfg.vlm.text["vocab_size"]) - len(ADDED))
    torch.manual_seed(0)
    model = GLUSModel(cfg, LlamaSentencePieceTokenizer(ckpt), empty_llm=True)
    model.to(torch.bfloat16)  # SAM 2 and CLIP (built in fp32, ~2 GB) to bf16 before the LLM exists
    materialise_random(model, torch.bfloat16, torch.device("cpu"))
    # the [SEG] row as the fixtures have it: most windows answer [SEG], so the SAM 2 step runs too
    with torch.no_grad():
        lm_head = model.vlm.llava.lm_head.weight
        lm_head[cfg.vlm.text["vocab_size"] - 1] = 1.2 * torch.ones(lm_head.shape[1]) / lm_head.shape[1] ** 0.5
    print(f"built random GLUS-S in {time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_gb():.1f} GB", flush=True)
    state = {}
    vision = {}
    for key, value in model.state_dict().items():
        if key.startswith("vlm.llava.model.vision_tower."):
            vision["vision_model." + key.removeprefix("vlm.llava.model.vision_tower.")] = value
            continue
        for ours, theirs in OFFICIAL_NAMES:
            if key.startswith(ours):
                state[theirs + key[len(ours):]] = value
                break
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, ckpt / name)
        weight_map.update({k: name for k in shard})
    (ckpt / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    text = dict(cfg.vlm.text)
    (ckpt / "config.json").write_text(json.dumps({**text, "model_type": "llava", "architectures": ["GLUSForCausalLM"],
                                                  "torch_dtype": "bfloat16", "vision_tower": "clip"}))
    clip.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vision.items()}, str(clip / "model.safetensors"))
    (clip / "config.json").write_text(json.dumps({**cfg.vlm.vision, "image_size": cfg.vlm.image_size,
                                                  "model_type": "clip_vision_model"}))
    size = cfg.vlm.image_size
    (clip / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": size},
                                                               "crop_size": {"height": size, "width": size}}))
    print(f"wrote {len(shards)} shards to {ckpt} in {time.perf_counter() - t0:.1f} s", flush=True)


def synthetic_frames(n: int, height: int = 480, width: int = 640) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((height, width, 3)) * 255).astype(np.uint8) for _ in range(n)]


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", required=True, help="folder for the random release (written when absent)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--frames", type=int, default=0, help="also segment a video of N frames (GPU)")
    parser.add_argument("--model-override", help="YAML merged into glus-s (e.g. a test fixture's tiny dimensions, "
                                                 "for a quick dry run of the benchmark itself)")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    release = Path(args.release)
    from glus_ros.model.config import read_yaml_mapping

    overrides = read_yaml_mapping(Path(args.model_override)) if args.model_override else None
    if args.write_only:
        write_release(release, overrides)
        return
    if not (release / "checkpoint" / "pytorch_model.bin.index.json").is_file():
        extra = ["--model-override", args.model_override] if args.model_override else []
        subprocess.run([sys.executable, __file__, "--release", str(release), "--write-only", *extra], check=True)

    from glus_ros.core.frames import FrameEncoder
    from glus_ros.core.grounders import ConversationGrounder
    from glus_ros.core.loop import WindowLoop
    from glus_ros.core.tracking import frame_mask, track_frame
    from glus_ros.inference import load_model
    from glus_ros.model.memory_bank import MemoryBank

    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, weights {args.dtype}")
    rss0 = peak_rss_gb()
    t0 = time.perf_counter()
    model = load_model("glus-s", release / "checkpoint", vision_tower=release / "clip", device=args.device,
                       overrides=overrides, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    gc.collect()
    params = sum(p.numel() for p in model.parameters())
    print(f"load: {load_s:.1f} s, {params / 1e9:.2f} B params, peak RSS {peak_rss_gb():.1f} GB "
          f"(process start {rss0:.1f} GB)" + (f", GPU peak {torch.cuda.max_memory_allocated() / 1024**3:.1f} GB"
                                              if device.type == "cuda" else ""), flush=True)
    frames = synthetic_frames(8)
    encoder = FrameEncoder(model, frames, one_by_one=True)
    grounder = ConversationGrounder(model, encoder, "the person on the left")
    conversation = grounder.conversation
    projection = model.seg_projection

    def decode(features, hidden, bank, size):
        prompt = projection(hidden.to(next(projection.parameters()).dtype))[None]
        return frame_mask(track_frame(model, features, prompt, bank), *size, model.cfg.loop)

    with torch.inference_mode():
        tokens, clip_s = timed(lambda: list(encoder.frame_tokens(range(len(frames)))), device)
        ids = conversation.ids(4)
        (token, hidden), llm_s = timed(lambda: grounder.answer(ids, tokens), device)
        features, sam_image_s = timed(lambda: encoder.sam_features(len(frames) - 1), device)
        bank = MemoryBank(model.cfg.memory.slots, model.cfg.memory.stride)
        _, decode_s = timed(lambda: decode(features, hidden, bank, frames[-1].shape[:2]), device)
    window_s = llm_s + clip_s / len(frames) + sam_image_s + decode_s
    answer = "[SEG]" if token == conversation.seg_id else str(token)
    print(f"one full window ({len(ids)} ids, {len(ids) - 8 + 8 * tokens[0].shape[0]} LLM positions): "
          f"CLIP {clip_s / len(frames):.2f} s/frame, LLM pass {llm_s:.1f} s (answer {answer}), "
          f"SAM 2 image encoder ({model.sam.image_size} px) {sam_image_s:.2f} s, "
          f"memory read + decode + write {decode_s:.2f} s", flush=True)
    print(f"s/window (steady state: one new frame per window) {window_s:.1f} s; peak RSS {peak_rss_gb():.1f} GB"
          + (f", GPU peak {torch.cuda.max_memory_allocated() / 1024**3:.1f} GB" if device.type == "cuda" else ""))
    if args.frames:
        video = synthetic_frames(args.frames)
        result, total = timed(lambda: WindowLoop(model).segment(video, "the person on the left"), device)
        print(f"offline official segmentation of {args.frames} frames: {total / args.frames:.2f} s/frame, "
              f"{args.frames / total:.2f} MLLM windows/s (one per frame), "
              f"{int(result.scores.astype(bool).sum())} frames answered [SEG]")
        sam_s = []
        video_encoder = FrameEncoder(model, video)
        for i, f in enumerate(video[: min(8, args.frames)]):
            feats, s1 = timed(lambda i=i: video_encoder.sam_features(i), device)
            _, s2 = timed(lambda feats=feats, f=f: decode(feats, hidden, bank, f.shape[:2]), device)
            sam_s.append(s1 + s2)
        print(f"SAM 2 tracker alone (image encoder + memory + decode, {model.sam.image_size} px): "
              f"{1 / float(np.mean(sam_s)):.2f} frames/s")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
