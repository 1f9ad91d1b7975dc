"""Loading the released GLUS weights (configs with an ``official`` section: glus-s, glus-a).

The official inference (github GLUS-video/GLUS commit 8fd138b ``inference_iter.py`` + ``GLUSForCausalLM.evaluate``)
runs in glus_ros's one window loop (``glus_ros.core``) under the config's ``loop`` section, which
models/glus-s.yaml sets to the official rules (the facts are in docs/official_weights.md):

- context frames: ``linspace(0, N, 5)`` as ints gives 4 segments; frame ``start_j + ceil(N / 4) // 2`` of each,
  at most the segment's last frame (``glus_ros.sampling.official_context_frames``);
- a pass runs over frames in order; step i (1-based) shows the query frames ``max(0, i-4) .. i-1`` of the pass
  (windows grow 1, 2, 3, 4, then slide) as a multi-turn llava_v1 conversation and decodes only the newest;
- one token is generated (greedy); when it is ``[SEG]`` the prompt is ``text_hidden_fcs`` of the final-norm
  hidden state at the last prompt position (the state that predicted it), else the frame's mask is empty
  and it writes no memory (``glus_ros.core.grounders.ConversationGrounder``);
- SAM 2: the sparse prompt is that embedding alone, the memory (7 slots, stride 3, no object pointers,
  cleared at the start of a pass, read farthest first) is read with ``maskmem_pos_enc`` only, the memory encoder
  gets the memory-conditioned features and the mask logits resized to the SAM input size; the mask is the low-res
  logits resized once (bilinear) to the frame size, > 0, the object score not used;
- with a start (key) frame K > 0: forward K .. N-1, then backward K .. 0 from a cleared memory (K decoded again).

This module builds such a model from a release folder and a CLIP folder, as the official loader fills it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from glus_ros.devices import resolve_device, weight_dtype
from glus_ros.model.glus import GLUSModel

log = logging.getLogger(__name__)


def load_official_model(spec: str | Path, checkpoint: str | Path | None, sam2_checkpoint: str | Path | None = None,
                        device: str = "cpu", overrides: dict | None = None, vision_tower: str | Path | None = None,
                        dtype: str | None = None, adapter: str | Path | None = None) -> GLUSModel:
    """A released GLUS-S / GLUS-A folder (``checkpoint``) with a local CLIP folder (``vision_tower``, or the
    config's ``vlm.vision_tower``), weights in ``dtype`` ("bf16" by default on CUDA, else "fp32").

    ``adapter`` (or the config's ``official.adapter``): a fine-tuning export of ``glus_ros.model.release_export.
    save_adapter`` applied to the release (LoRA merged into the base weights, the trained heads assigned), so a
    fine-tuned model ships as a small fraction of the release instead of a second copy of it;
    ``model.adapter_report`` says what it changed.

    The language model is assigned from the checkpoint without a float32 copy (built on the meta device);
    ``sam2_checkpoint`` (a SAM 2 / 2.1 ``.pt``) is loaded first and then replaced by the release's own
    ``model.visual_model.*`` weights, which are part of what GLUS trained. With ``official.load_weights:
    official_loader`` (the default of glus-s / glus-a) the tensors transformers 4.31 does not load (SAM 2's fuser
    layer scales) keep the official constructor's value, as in the official inference; ``model.load_report`` lists
    them (``initial``).
    """
    from glus_ros.model.checkpoints import load_sam2_checkpoint
    from glus_ros.model.config import load_config
    from glus_ros.model.official_checkpoint import load_release
    from glus_ros.model.tokenizer import load_tokenizer

    cfg = load_config(spec, overrides)
    target = resolve_device(device)
    dtype = dtype or ("bf16" if target.type == "cuda" else "fp32")
    weights = weight_dtype(dtype)
    if checkpoint is None:
        raise ValueError(f"model {cfg.name} runs the released GLUS weights: give the release folder with "
                         "--checkpoint DIR (config.json, pytorch_model-*.bin or *.safetensors, tokenizer.model, "
                         "added_tokens.json) and a local CLIP ViT-L/14 folder with --vision-tower DIR")
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    tower = vision_tower if vision_tower is not None else cfg.vlm.vision_tower
    adapter = adapter if adapter is not None else cfg.official.adapter if cfg.official is not None else None
    if adapter is not None and not Path(adapter).is_dir():
        raise FileNotFoundError(f"adapter folder {adapter} does not exist")  # before the (long) release load
    if tower is not None:
        if not Path(tower).is_dir():
            raise FileNotFoundError(f"vision tower folder {tower} does not exist")
        cfg.vlm.vision_tower = str(Path(tower).resolve())  # its preprocessor_config.json drives the CLIP input
    tokenizer = load_tokenizer(cfg.vlm.tokenizer, ckpt if ckpt.is_dir() else ckpt.parent)
    with torch.random.fork_rng(devices=[]):  # only what the files do not hold keeps this initialisation
        torch.manual_seed(0)
        model = GLUSModel(cfg, tokenizer, empty_llm=True)
    if sam2_checkpoint is not None:
        load_sam2_checkpoint(model.sam.sam, Path(sam2_checkpoint))
    report = load_release(model, ckpt, Path(tower) if tower is not None else None, weights)
    model = model.to(weights)
    model.adapter_report = None
    if adapter is not None:
        from glus_ros.model.release_export import load_adapter

        model.adapter_report = load_adapter(model, adapter)  # merged in the weights' dtype, before the device move
        trained_from = model.adapter_report.release
        if trained_from is not None and Path(trained_from).resolve() != ckpt.resolve():
            log.warning("adapter %s was trained from %s, applied to %s", adapter, trained_from, ckpt)
    model = model.to(target).eval()
    model.load_report = report  # what was loaded, and what keeps its initial value as the official loader leaves it
    return model
