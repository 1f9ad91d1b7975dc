"""Tiny random point-tracker folders in transformers' released layouts (SAM 3's tracker, EdgeTAM), no downloads.

``write_tiny_sam3_tracker``: ``Sam3TrackerVideoModel.save_pretrained`` (``config.json`` with ``model_type:
sam3_tracker_video``, ``model.safetensors``) plus ``processor_config.json`` (``image_processor`` and
``video_processor``, as the SAM 3 release writes it). Sizes are ``helpers_sam3``'s: the tracker splits each
object pointer into memory-width pieces, so its layer width must be a multiple of the memory width (128 over
64), and its 112 px input must be a whole number of 14 px patches whose feature sizes the config lists.

``write_edgetam_folder``: the EdgeTAM layout (``model_type: edgetam_video``) with a placeholder weights file: what
the folder check reads before the model is built (building it needs timm, which needs torchvision).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers_sam3 import SIZE, processor_config, tiny_config
from safetensors.torch import save_file
from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoModel


def write_tiny_sam3_tracker(folder: Path, seed: int = 0, visible: bool = True) -> Path:
    """The tiny tracker saved as its own folder; ``visible``: its object-score head says "present" everywhere (a
    random head would call every frame empty, and tracking would never be exercised)."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Sam3TrackerVideoModel(tiny_config(300).tracker_config).eval()
    if visible:
        with torch.no_grad():
            head = model.mask_decoder.pred_obj_score_head
            last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.fill_(10.0)
    model.save_pretrained(str(folder))
    (folder / "processor_config.json").write_text(json.dumps(processor_config(), indent=2))
    return folder


def write_edgetam_folder(folder: Path) -> Path:
    """EdgeTAM's file layout with a placeholder weights file (module doc)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "edgetam_video", "image_size": SIZE}))
    save_file({"placeholder": torch.zeros(1)}, str(folder / "model.safetensors"))
    (folder / "processor_config.json").write_text(json.dumps(processor_config(), indent=2))
    return folder
