"""A local Molmo2 model folder, as the released ``allenai/Molmo2-*`` folders lay it out, checked before loading.

Files read (the released folders also hold remote-code ``*.py`` files, which are never imported: the
model runs on transformers' own ``molmo2`` classes):

- ``config.json``: ``model_type: molmo2`` (released keys ``vit_config`` / ``vit_layers`` /
  ``image_default_input_size`` are read by transformers' ``Molmo2Config``);
- weights: ``model.safetensors``, or ``model.safetensors.index.json`` + its shards (released key names
  ``model.transformer.blocks.*``, ``model.vision_backbone.*``; transformers maps them onto its modules);
- tokenizer: ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``), ``tokenizer_config.json``;
- ``video_preprocessor_config.json``: frame size, patch, pooling, mean/std, ``max_fps``, ``num_frames``;
- ``processor_config.json`` (optional): ``use_frame_special_tokens``, ``video_use_col_tokens``;
- the chat template: ``chat_template.jinja`` (released), else ``chat_template.json`` or the
  ``chat_template`` of ``tokenizer_config.json``;
- ``generation_config.json`` (optional): BOS / EOS / PAD ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glus_ros.backends.molmo2_inputs import TokenLayout, VideoProcessing

MOLMO2_MODEL_TYPE = "molmo2"
EXPECTED_FILES = ("config.json", "model.safetensors | model.safetensors.index.json + shards",
                  "tokenizer.json | vocab.json + merges.txt", "tokenizer_config.json",
                  "video_preprocessor_config.json", "chat_template.jinja")


def read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return raw


def open_model_folder(folder: str | Path, what: str, expected: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """(path, config.json) of a transformers model folder, after the checks every such folder needs (it exists, is
    a folder, has a readable config.json); errors name the folder and what a ``what`` folder holds."""
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"{what} folder {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"{what} model {path} must be a folder (expected files: {', '.join(expected)})")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a transformers model folder "
                                f"(a {what} folder holds {', '.join(expected)})")
    return path, read_json(path / "config.json")


def check_weights_file(path: Path) -> None:
    """The folder has safetensors weights (one file, or an index and its shards)."""
    if not ((path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()):
        raise FileNotFoundError(f"{path} has no weights (model.safetensors or model.safetensors.index.json)")


def check_loaded_weights(info: dict[str, Any], path: Path) -> None:
    """Refuse weights that leave tensors missing or of another shape (transformers would leave them random with
    only a warning); ``info``: ``from_pretrained(..., output_loading_info=True)``'s second value."""
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        detail = "; ".join(f"{k.replace('_', ' ')} {len(v)}: {', '.join(map(str, v[:6]))}"
                           for k, v in problems.items() if v)
        raise ValueError(f"{path}: the weights do not fit config.json ({detail})")


def folder_model_type(folder: Path) -> str | None:
    """``model_type`` of a transformers folder's ``config.json``; None when the folder has no config.json."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    return str(read_json(path).get("model_type", ""))


@dataclass(frozen=True)
class Molmo2Folder:
    path: Path
    config: dict[str, Any]
    video: VideoProcessing
    layout: TokenLayout
    chat_template: str


def _chat_template(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        template = read_json(folder / "chat_template.json").get("chat_template")
        if isinstance(template, str):
            return template
    if (folder / "tokenizer_config.json").is_file():
        template = read_json(folder / "tokenizer_config.json").get("chat_template")
        if isinstance(template, str):
            return template
    return None


def read_molmo2_folder(folder: str | Path) -> Molmo2Folder:
    """The folder's configs, or one clear error naming what is missing or wrong."""
    path, config = open_model_folder(folder, "Molmo2", EXPECTED_FILES)
    model_type = config.get("model_type")
    if model_type != MOLMO2_MODEL_TYPE:
        raise ValueError(f"{path}/config.json: model_type is {model_type!r}; the Molmo2 backend reads "
                         f"model_type {MOLMO2_MODEL_TYPE!r}")
    check_weights_file(path)
    bpe_files = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not ((path / "tokenizer.json").is_file() or bpe_files):
        raise FileNotFoundError(f"{path} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    video_path = path / "video_preprocessor_config.json"
    if not video_path.is_file():
        raise FileNotFoundError(f"{path} has no video_preprocessor_config.json (frame size, patch and pooling "
                                "of Molmo2's video input)")
    video = VideoProcessing.from_json(read_json(video_path), str(video_path))
    layout = TokenLayout()
    if (path / "processor_config.json").is_file():
        layout = TokenLayout.from_json(read_json(path / "processor_config.json"))
    template = _chat_template(path)
    if template is None:
        raise FileNotFoundError(f"{path} has no chat template (chat_template.jinja, chat_template.json or "
                                "tokenizer_config.json's chat_template)")
    return Molmo2Folder(path, config, video, layout, template)
