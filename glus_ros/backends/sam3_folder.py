"""A local SAM 3 model folder, as the released ``facebook/sam3`` folder lays it out, checked before loading.

Why a check of our own: transformers reports a missing tokenizer or processor file deep inside its loaders
(or, for weights, leaves the tensors random with a warning); a robot operator needs one line naming the file.

Files read (the transformers layout of the release; nothing is ever downloaded):

- ``config.json``: ``model_type: sam3_video`` (a ``detector_config`` and a ``tracker_config``; the detection
  and association thresholds, ``low_res_mask_size``, ``fill_hole_area``);
- weights: ``model.safetensors``, or ``model.safetensors.index.json`` + its shards (``detector_model.*``,
  ``tracker_model.*``, ``tracker_neck.*``);
- the CLIP tokenizer: ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``, and ``tokenizer_config.json``;
- the frame preprocessing: ``processor_config.json`` (its ``image_processor`` entry) or
  ``preprocessor_config.json``: square size, mean/std, rescale factor, bilinear resampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glus_ros.backends.molmo2_folder import check_weights_file, open_model_folder, read_json
from glus_ros.backends.sam3_inputs import FramePreprocessing

SAM3_MODEL_TYPE = "sam3_video"
EXPECTED_FILES = ("config.json", "model.safetensors | model.safetensors.index.json + shards",
                  "tokenizer.json | vocab.json + merges.txt", "tokenizer_config.json",
                  "processor_config.json | preprocessor_config.json")


@dataclass(frozen=True)
class Sam3Folder:
    path: Path
    config: dict[str, Any]
    frames: FramePreprocessing


def image_processor_json(path: Path) -> tuple[dict[str, Any], str] | None:
    """The image processor settings and the file they came from (processor_config.json nests them)."""
    processor = path / "processor_config.json"
    if processor.is_file():
        raw = read_json(processor)
        nested = raw.get("image_processor")
        if isinstance(nested, dict):
            return nested, f"{processor} (image_processor)"
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
        return read_json(preprocessor), str(preprocessor)
    return None


def read_sam3_folder(folder: str | Path) -> Sam3Folder:
    """The folder's configs, or one clear error naming what is missing or wrong."""
    path, config = open_model_folder(folder, "SAM 3", EXPECTED_FILES)
    if config.get("model_type") != SAM3_MODEL_TYPE:
        raise ValueError(f"{path}/config.json: model_type is {config.get('model_type')!r}; the SAM 3 backend reads "
                         f"model_type {SAM3_MODEL_TYPE!r} (facebook/sam3: detector + tracker)")
    check_weights_file(path)
    bpe_files = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not ((path / "tokenizer.json").is_file() or bpe_files):
        raise FileNotFoundError(f"{path} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    if not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{path} has no tokenizer_config.json (the CLIP tokenizer's settings)")
    found = image_processor_json(path)
    if found is None:
        raise FileNotFoundError(f"{path} has no processor_config.json or preprocessor_config.json (frame size, "
                                "mean and std of SAM 3's input)")
    frames = FramePreprocessing.from_json(*found)
    detector = config.get("detector_config") or {}
    backbone = ((detector.get("vision_config") or {}).get("backbone_config") or {})
    size = backbone.get("image_size")
    if size is not None and int(size) != frames.size:
        raise ValueError(f"{path}: the processor resizes frames to {frames.size} px but config.json's vision "
                         f"backbone reads {size} px")
    return Sam3Folder(path, config, frames)
