"""Which engine streams a model: loading by backend, so the nodes and ``glus-ros track`` stay backend-agnostic.

A GLUS model (the tiny default, the released GLUS weights) streams through :class:`StreamingEngine`; a
pointing backend (Molmo2, selected by the model config: ``backends.loading``) through
:class:`PointingStreamingEngine`, its points seeding the same SAM 2 memory tracker; a concept backend (a SAM 3
folder) through :class:`ConceptStreamingEngine`, one output per instance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from glus_ros.backends.base import GroundingBackend
from glus_ros.streaming.engine import EngineConfig, StreamingEngine
from glus_ros.streaming.types import FrameResult


def load_stream_model(spec: str | Path, checkpoint: str | Path | None = None,
                      sam2_checkpoint: str | Path | None = None, device: str = "cpu",
                      vision_tower: str | Path | None = None, dtype: str | None = None,
                      model_override: str | Path | None = None, adapter: str | Path | None = None) -> Any:
    """A ``GLUSModel`` for a GLUS config or folder, the loaded backend for any other (e.g. a Molmo2 folder).

    ``vision_tower`` is the local CLIP folder of the released GLUS weights (glus-s, glus-a) and an error for
    any other model; ``dtype`` the release's weight precision (default: bf16 on CUDA, fp32 on CPU);
    ``model_override`` a YAML file merged into the model config (``--model-override``); ``adapter`` a fine-tuning
    export applied to the release (``--adapter``)."""
    from glus_ros.backends.loading import backend_of, load_backend
    from glus_ros.inference import load_model

    overrides = None
    if model_override is not None:
        from glus_ros.model.config import read_yaml_mapping

        if not Path(model_override).is_file():
            raise FileNotFoundError(f"model override {model_override} does not exist")
        overrides = read_yaml_mapping(Path(model_override))
    if backend_of(spec) == "glus":
        return load_model(spec, checkpoint, sam2_checkpoint, device, overrides, vision_tower=vision_tower, dtype=dtype,
                          adapter=adapter)
    if vision_tower is not None or adapter is not None:
        raise ValueError(f"vision_tower and adapter are for the released GLUS weights (glus-s, glus-a); model "
                         f"{spec} is not a release")
    return load_backend(spec, checkpoint, sam2_checkpoint, device)


def make_engine(model: Any, config: EngineConfig | None = None,
                on_result: Callable[[FrameResult], None] | None = None) -> StreamingEngine:
    """The streaming engine for what :func:`load_stream_model` returned."""
    if isinstance(model, GroundingBackend):
        if model.answers == "instances":
            from glus_ros.streaming.concept import ConceptStreamingEngine

            return ConceptStreamingEngine(model, config, on_result)  # type: ignore[arg-type]
        if model.answers == "points":
            from glus_ros.streaming.pointing import PointingStreamingEngine

            return PointingStreamingEngine(model, config, on_result)
        model = model.tracker   # a GLUS backend: its GLUSModel is the engine's model
    return StreamingEngine(model, config, on_result)
