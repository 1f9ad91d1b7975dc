"""A local point-tracker folder (SAM 3's tracker, EdgeTAM) in transformers' layout, checked before loading.

Why a check of our own: transformers reports a missing processor file deep inside its loaders, and leaves tensors
missing from the weights random with only a warning; an operator needs one line naming the file. Nothing is
ever downloaded. ``config.json``'s ``model_type`` says which tracker it is:

- ``sam3_tracker_video``: SAM 3's tracker saved on its own (``Sam3TrackerVideoModel.save_pretrained``);
- ``sam3_video``: the released ``facebook/sam3`` folder (detector + tracker): transformers' tracker class reads
  its ``tracker_config`` and its tracker and vision weights, and ignores the detector's;
- ``edgetam_video``: EdgeTAM (``EdgeTamVideoModel``; its image encoder is a timm backbone).

Files: ``config.json``; ``model.safetensors`` or ``model.safetensors.index.json`` + shards; the frame
preprocessing in ``processor_config.json`` (its ``image_processor``) or ``preprocessor_config.json`` (square
size, mean / std, rescale factor, bilinear), whose size must be the model's ``image_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glus_ros.backends.molmo2_folder import check_weights_file, open_model_folder
from glus_ros.backends.sam3_folder import image_processor_json
from glus_ros.backends.sam3_inputs import FramePreprocessing

TRACKER_MODEL_TYPES = {"sam3_tracker_video": "sam3", "sam3_video": "sam3", "edgetam_video": "edgetam"}
EXPECTED_FILES = ("config.json", "model.safetensors | model.safetensors.index.json + shards",
                  "processor_config.json | preprocessor_config.json")


@dataclass(frozen=True)
class TrackerFolder:
    path: Path
    kind: str                 # "sam3" | "edgetam"
    model_type: str
    config: dict[str, Any]
    frames: FramePreprocessing


def _image_size(config: dict[str, Any]) -> int | None:
    """The tracker's input size in config.json (a sam3_video folder keeps it under ``tracker_config``)."""
    tracker = config.get("tracker_config") if config.get("model_type") == "sam3_video" else config
    size = (tracker or {}).get("image_size")
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else None
    return None if size is None else int(size)


def read_tracker_folder(folder: str | Path) -> TrackerFolder:
    """The folder's configs, or one clear error naming what is missing or wrong."""
    path, config = open_model_folder(folder, "tracker", EXPECTED_FILES)
    model_type = str(config.get("model_type"))
    if model_type not in TRACKER_MODEL_TYPES:
        raise ValueError(f"{path}/config.json: model_type {model_type!r} is not a point tracker here (supported: "
                         f"{', '.join(map(repr, TRACKER_MODEL_TYPES))})")
    check_weights_file(path)
    found = image_processor_json(path)
    if found is None:
        raise FileNotFoundError(f"{path} has no processor_config.json or preprocessor_config.json (frame size, "
                                "mean and std of the tracker's input)")
    frames = FramePreprocessing.from_json(*found)
    size = _image_size(config)
    if size is not None and size != frames.size:
        raise ValueError(f"{path}: the processor resizes frames to {frames.size} px but config.json's tracker "
                         f"reads {size} px")
    return TrackerFolder(path, TRACKER_MODEL_TYPES[model_type], model_type, config, frames)
