"""Model configuration: dataclasses filled from the YAML files in ``models/``.

One file describes one architecture (``tiny``, ``glus-s``); a trained model directory holds its own
``config.yaml`` next to the weights, so a checkpoint always carries the sizes it was trained with.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROMPT = "context: {context} query: {query} expression: {expression} answer: {answer}"
DEFAULT_ANSWER = "{seg}"
DEFAULT_CONTEXT_FRAME = "<image>"
DEFAULT_QUERY_FRAME = "<image>"

TRAINABLE_GROUPS = (
    "vision_tower", "llm", "token_embeddings", "llm_lora", "projections", "image_encoder", "prompt_encoder",
    "mask_decoder", "memory", "key_frame", "points", "temporal",
)


@dataclass
class VLMConfig:
    """The LLaVA-style vision-language model and how frames and text become its prompt."""

    text: dict[str, Any] = field(default_factory=dict)     # transformers LlamaConfig fields
    vision: dict[str, Any] = field(default_factory=dict)   # transformers CLIPVisionConfig fields
    tokenizer: str = "builtin"          # "builtin", "checkpoint" or a directory
    image_size: int = 64
    vision_feature_layer: int = -2
    visual_token_pool: int = 4          # token reduction factor per frame (a square number)
    projector: str = "mlp2x_gelu"       # "mlp2x_gelu" or "linear"
    seg_hidden_layer: int = -1
    prompt_template: str = DEFAULT_PROMPT
    answer_template: str = DEFAULT_ANSWER
    context_frame_template: str = DEFAULT_CONTEXT_FRAME
    query_frame_template: str = DEFAULT_QUERY_FRAME
    temporal_module: bool = False       # VideoMolmo: each frame's tokens attend to the preceding frames'
    grounding_map: bool = False         # [SEG] matched to the query frame's token states -> SAM 2 mask prompt
    grounding_spatial: bool = False     # the map adds a ramp and near/far anchors for position/relation words
    grounding_motion: int = 0           # > 0: the spatial terms read a motion field of this many context frames
    visual_position: bool = False       # a learned row/column code added to each frame token (model/visual_position.py)
    # how ``visual_token_pool`` tokens are averaged: "square" blocks of the patch grid (2x2 for 4), or "strip":
    # runs of consecutive tokens in raster order (LLaVA/GLUS ``AvgPool1d(4, 4)``, 1x4 strips)
    token_pool_layout: str = "square"
    # vision tower input: "square" (resize to image_size, CLIP mean/std) or "shortest_edge_crop" (what
    # CLIPImageProcessor does: short side bicubic to the crop size, centre crop; sizes from the CLIP folder)
    clip_preprocess: str = "square"
    vision_tower: str | None = None     # a local Hugging Face CLIP folder whose vision_model.* weights are loaded

    @property
    def patches_per_side(self) -> int:
        return self.image_size // int(self.vision["patch_size"])

    @property
    def tokens_per_frame(self) -> int:
        if self.token_pool_layout == "strip":
            return self.patches_per_side ** 2 // self.visual_token_pool
        pool = _pool_side(self.visual_token_pool)
        return (self.patches_per_side // pool) ** 2


@dataclass
class SamplingConfig:
    num_context: int = 4   # sparse frames over the whole video (global reasoning)
    num_query: int = 4     # consecutive frames decoded with one [SEG] each (local reasoning)
    query_in_prompt: bool = True  # false: global-only ablation (the MLLM sees the context frames only)


@dataclass
class MemoryConfig:
    enabled: bool = True
    slots: int = 7         # memory frames read per step: the previous one + older ones on a stride
    stride: int = 3        # inference stride between the older memory frames
    train_stride: int = 1
    temporal_pos_enc: bool = True   # add SAM 2's maskmem_tpos_enc to the memory position (official GLUS: false)
    encoder_input: str = "frame"    # memory encoder reads the frame's own features, or "conditioned" ones (official)
    read_order: str = "nearest_first"  # order the memories enter memory attention; official GLUS: farthest_first


@dataclass
class DecoderConfig:
    """How prompts enter the SAM 2 mask decoder."""

    pad_point: bool = True   # a "not a point" padding point after the [SEG] prompt (SAM 2 style); official GLUS: false


@dataclass
class OfficialConfig:
    """The official GLUS inference (github GLUS-video/GLUS ``inference_iter.py``, commit 8fd138b), step by step.

    Present only in the configs for the released weights (glus-s, glus-a); ``glus_ros.official_glus`` runs it.
    ``load_weights``: "official_loader" loads the release as the official inference does (transformers 4.31
    ``from_pretrained`` renames keys holding "gamma"/"beta", so SAM 2's memory-encoder layer scales keep their
    initial 1e-6); "as_stored" loads every tensor as the release stores it (docs/official_weights.md).
    ``adapter``: a fine-tuning export (``release_export.save_adapter``) applied to the release, as ``--adapter DIR``.
    """

    conversation: str = "llava_v1"
    load_weights: str = "official_loader"
    adapter: str | None = None


PROMPT_FORMATS = ("compact", "llava_v1")
WINDOW_RULES = ("padded", "growing")
CONTEXT_RULES = ("segment_middle", "official")
BACKWARD_RULES = ("seeded", "cleared")
MASK_RESIZES = ("sam_input", "low_res")


@dataclass
class LoopConfig:
    """How the window loop (``glus_ros.core``) runs: one loop for every GLUS model, its policies chosen here.

    The project's own family (defaults) and the official GLUS inference (glus-s / glus-a, ``OFFICIAL_LOOP``)
    differ only in these rules:

    * ``prompt_format``: ``compact`` (the own prompt: context + query frames, one [SEG] per query frame in one
      pass) or ``llava_v1`` (the release's multi-turn conversation, one query frame per turn; one token is
      generated and only a [SEG] answer prompts SAM 2);
    * ``windows``: ``padded`` (``num_query`` frames from the first step, padded with the last frame on short
      videos; the first window decodes all its frames) or ``growing`` (1, 2, ... ``num_query`` frames, then
      sliding; each step decodes only its newest frame);
    * ``context_frames``: ``segment_middle`` (the middle frame of each of N segments) or ``official``
      (segment start + ceil(T/N)//2, ``official_context_frames``);
    * ``backward``: from a start frame > 0 the backward pass starts from the key frame's memory (``seeded``;
      the key frame is not decoded again) or from a cleared memory (``cleared``; the key frame is decoded again);
    * ``visibility_gate``: a mask is shown only where SAM 2's object score says the object is visible;
    * ``mask_resize``: the frame's mask is the SAM-size logits resized (``sam_input``) or the low-res logits
      resized once (``low_res``).
    """

    prompt_format: str = "compact"
    windows: str = "padded"
    context_frames: str = "segment_middle"
    backward: str = "seeded"
    visibility_gate: bool = True
    mask_resize: str = "sam_input"


# what the official inference (inference_iter.py) does; models/glus-s.yaml and glus-a.yaml spell it out
OFFICIAL_LOOP = {"prompt_format": "llava_v1", "windows": "growing", "context_frames": "official",
                 "backward": "cleared", "visibility_gate": False, "mask_resize": "low_res"}


@dataclass
class KeyFrameConfig:
    """The key-frame selector head (glus_ros.model.key_frame); absent until one is trained."""

    hidden: int = 128
    kernel: int = 5   # frames seen by its temporal convolution (odd)


@dataclass
class PointsConfig:
    """The point head (glus_ros.model.point_head): a set of points per [SEG]; absent unless configured."""

    max_points: int = 8        # slots per query frame: the most objects one answer can point at
    threshold: float = 0.5     # presence probability above which a slot is a point
    locate: str = "regress"    # "regress" from the [SEG] state, or "attend" over the query frame's tokens


@dataclass
class GLUSConfig:
    name: str
    vlm: VLMConfig
    sam2: dict[str, Any]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    trainable: list[str] = field(default_factory=lambda: list(TRAINABLE_GROUPS))
    key_frame: KeyFrameConfig | None = None
    points: PointsConfig | None = None
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    official: OfficialConfig | None = None
    loop: LoopConfig = field(default_factory=LoopConfig)

    @property
    def sam_image_size(self) -> int:
        return int(self.sam2["image_size"])

    @property
    def sam_hidden_dim(self) -> int:
        return int(self.sam2["image_encoder"]["neck"]["d_model"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _pool_side(pool: int) -> int:
    side = round(pool**0.5)
    if side * side != pool:
        raise ValueError(f"visual_token_pool must be a square number (4 = 2x2), got {pool}")
    return side


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> GLUSConfig:
    """Build a config, naming the file and the key when something is wrong."""
    raw = copy.deepcopy(raw)
    for key in ("vlm", "sam2"):
        if key not in raw:
            raise ValueError(f"{source}: model config has no '{key}' section")
    try:
        vlm = VLMConfig(**raw["vlm"])
        sampling = SamplingConfig(**raw.get("sampling", {}))
        memory = MemoryConfig(**raw.get("memory", {}))
        key_frame = KeyFrameConfig(**raw["key_frame"]) if raw.get("key_frame") else None
        points = PointsConfig(**raw["points"]) if raw.get("points") is not None else None  # {}: defaults
        decoder = DecoderConfig(**raw.get("decoder", {}))
        official = OfficialConfig(**raw["official"]) if raw.get("official") is not None else None
        # a release config without a loop section (older saved configs) runs the official loop
        loop = LoopConfig(**raw.get("loop", OFFICIAL_LOOP if official is not None else {}))
    except TypeError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    trainable = list(raw.get("trainable", TRAINABLE_GROUPS))
    unknown = sorted(set(trainable) - set(TRAINABLE_GROUPS))
    if unknown:
        raise ValueError(f"{source}: unknown trainable groups {unknown}; known: {list(TRAINABLE_GROUPS)}")
    cfg = GLUSConfig(
        name=str(raw.get("name", Path(source).stem)), vlm=vlm, sam2=raw["sam2"],
        sampling=sampling, memory=memory, trainable=trainable, key_frame=key_frame, points=points,
        decoder=decoder, official=official, loop=loop,
    )
    if points is not None and (points.max_points < 1 or not 0.0 < points.threshold < 1.0):
        raise ValueError(f"{source}: points needs max_points >= 1 and 0 < threshold < 1")
    _check_switches(cfg, source)
    if cfg.vlm.token_pool_layout == "strip":
        if cfg.vlm.patches_per_side ** 2 % cfg.vlm.visual_token_pool:
            raise ValueError(f"{source}: {cfg.vlm.patches_per_side ** 2} patch tokens not divisible by the pool")
    else:
        _pool_side(cfg.vlm.visual_token_pool)
        if cfg.vlm.patches_per_side % _pool_side(cfg.vlm.visual_token_pool):
            raise ValueError(f"{source}: {cfg.vlm.patches_per_side} patches per side not divisible by the pool")
    if cfg.memory.slots < 1 or cfg.memory.stride < 1 or cfg.memory.train_stride < 1:
        raise ValueError(f"{source}: memory slots and strides must be >= 1")
    if cfg.sampling.num_context < 0 or cfg.sampling.num_query < 1:
        raise ValueError(f"{source}: need num_context >= 0 and num_query >= 1")
    if cfg.vlm.grounding_spatial and not cfg.vlm.grounding_map:
        raise ValueError(f"{source}: vlm.grounding_spatial adds terms to the grounding map; set vlm.grounding_map too")
    motion = cfg.vlm.grounding_motion
    if motion:
        if motion < 2:
            raise ValueError(f"{source}: vlm.grounding_motion is the number of context frames the motion field reads "
                             f"(>= 2, or 0 for none), got {motion}")
        if not cfg.vlm.grounding_spatial:
            raise ValueError(f"{source}: vlm.grounding_motion is read by the map's spatial terms; set "
                             "vlm.grounding_spatial too")
        if cfg.sampling.num_context not in (0, motion):
            raise ValueError(f"{source}: the motion field reads {motion} context frames (vlm.grounding_motion) but "
                             f"sampling.num_context is {cfg.sampling.num_context}")
    return cfg


def _check_switches(cfg: GLUSConfig, source: str) -> None:
    """The enumerated switches, and what the official inference needs."""
    choices = {"vlm.token_pool_layout": (cfg.vlm.token_pool_layout, ("square", "strip")),
               "vlm.clip_preprocess": (cfg.vlm.clip_preprocess, ("square", "shortest_edge_crop")),
               "memory.encoder_input": (cfg.memory.encoder_input, ("frame", "conditioned")),
               "memory.read_order": (cfg.memory.read_order, ("nearest_first", "farthest_first")),
               "loop.prompt_format": (cfg.loop.prompt_format, PROMPT_FORMATS),
               "loop.windows": (cfg.loop.windows, WINDOW_RULES),
               "loop.context_frames": (cfg.loop.context_frames, CONTEXT_RULES),
               "loop.backward": (cfg.loop.backward, BACKWARD_RULES),
               "loop.mask_resize": (cfg.loop.mask_resize, MASK_RESIZES)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{source}: {key} must be one of {list(allowed)}, got {value!r}")
    if cfg.loop.prompt_format == "llava_v1":
        if cfg.official is None:
            raise ValueError(f"{source}: loop.prompt_format llava_v1 is the released GLUS conversation; it needs the "
                             "'official' section (glus-s, glus-a)")
        if cfg.loop.windows != "growing":
            raise ValueError(f"{source}: the llava_v1 conversation shows one query frame per turn and decodes the "
                             "newest: loop.windows must be growing")
    if cfg.official is not None:
        if cfg.official.load_weights not in ("official_loader", "as_stored"):
            raise ValueError(f"{source}: official.load_weights must be one of ['official_loader', 'as_stored'], "
                             f"got {cfg.official.load_weights!r}")
        if cfg.official.conversation != "llava_v1":
            raise ValueError(f"{source}: official.conversation: only llava_v1 (the GLUS release) is implemented, "
                             f"got {cfg.official.conversation!r}")
        if cfg.sampling.num_context != 4 or not cfg.sampling.query_in_prompt:
            raise ValueError(f"{source}: the official GLUS conversation shows 4 context frames and the query frames "
                             "(sampling.num_context: 4, query_in_prompt: true)")
        if cfg.vlm.tokenizer != "llama_sentencepiece":
            raise ValueError(f"{source}: the official GLUS conversation needs vlm.tokenizer: llama_sentencepiece")
        if not cfg.memory.enabled:
            raise ValueError(f"{source}: the official GLUS inference reads the memory bank (memory.enabled: true)")


def model_config_dirs() -> list[Path]:
    """Where named configs live: the source tree's ``models/`` and the installed share folders, the ament prefixes'
    first in their order (a colcon overlay: ``<install>/glus_ros/share/glus_ros/models``), then this prefix's."""
    here = Path(__file__).resolve().parents[2] / "models"
    prefixes = [*(p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p), sys.prefix]
    installed = [Path(prefix) / "share" / "glus_ros" / "models" for prefix in prefixes]
    return list(dict.fromkeys(p for p in (here, *installed) if p.is_dir()))


def resolve_config_path(spec: str | Path) -> Path:
    """A config name (``tiny``), a YAML file, or a trained model directory holding ``config.yaml``."""
    path = Path(spec)
    if path.is_dir():
        cfg = path / "config.yaml"
        if not cfg.is_file():
            raise FileNotFoundError(f"model directory {path} has no config.yaml")
        return cfg
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist")
        return path
    for folder in model_config_dirs():
        for candidate in (folder / str(spec) / "config.yaml", folder / f"{spec}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for d in model_config_dirs() for p in d.glob("*.yaml")}
                   | {p.parent.name for d in model_config_dirs() for p in d.glob("*/config.yaml")})
    raise FileNotFoundError(f"no model named '{spec}' (known: {known}); give a YAML file or a model directory")


def model_dir_of(spec: str | Path) -> Path | None:
    """The trained model folder a spec names (a path, or a name under ``models/``), None for plain configs."""
    path = resolve_config_path(spec)
    return path.parent if path.name == "config.yaml" else None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file (model configs, training recipes)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(spec: str | Path, overrides: dict[str, Any] | None = None) -> GLUSConfig:
    path = resolve_config_path(spec)
    raw = read_yaml_mapping(path)
    if overrides:
        raw = deep_update(raw, overrides)
    return config_from_dict(raw, str(path))


def deep_update(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


# The model used when none is named: the embedded default of segment, eval and the ROS nodes.
DEFAULT_MODEL = "glus-tiny-synth"  # models/glus-tiny-synth: tiny trained on the synthetic benchmark (model card there)
