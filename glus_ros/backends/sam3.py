"""SAM 3 as a concept backend: a noun phrase ("the mugs") finds every instance, each tracked on its own.

transformers' ``Sam3VideoModel`` (detector + tracker sharing one vision backbone) runs here in pieces so that a
live stream can schedule them apart (``streaming/concept.py``): ``encode`` is the backbone pass every frame
needs (the tracker's features, and the detector's input on frames that are detected), ``detect`` is the
detector on one frame (the text encoding cached per phrase), and ``sam3_tracks.InstanceTracks`` is the tracker.
Detections follow ``Sam3VideoModel.run_detection``: probability = sigmoid(query logit) x sigmoid(presence
logit), duplicates suppressed by mask NMS (``sam3_postprocess``: transformers skips it without the hub
``kernels``), kept above ``score_threshold_detection``.

``ground`` (the common backend interface) answers with the instances' interior points per frame and their
count; the tracking itself is the concept engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from glus_ros.backends.base import FrameGrounding, GroundingBackend, TargetGrounding
from glus_ros.backends.glus import check_window
from glus_ros.backends.molmo2_folder import check_loaded_weights
from glus_ros.backends.sam3_folder import Sam3Folder, read_sam3_folder
from glus_ros.backends.sam3_inputs import PhraseTokens, concept_phrase, preprocess_frames, tokenize_phrase
from glus_ros.backends.sam3_postprocess import fill_holes, mask_nms
from glus_ros.geometry import component_points
from glus_ros.model.transforms import logits_to_frame


@dataclass
class Sam3Settings:
    """How instances are found and kept; ``None``: the folder's config.json value (Sam3VideoConfig's names)."""

    score_threshold_detection: float | None = None   # a detection counts above this probability
    det_nms_thresh: float | None = None              # mask IoU above which a lower-scoring detection is a duplicate
    new_det_thresh: float | None = None              # an unmatched detection starts a new instance above this
    assoc_iou_thresh: float | None = None            # a detection matches an instance above this mask IoU
    fill_hole_area: int | None = None                # holes / specks up to this many low-res pixels are filled
    unmatched_limit: int | None = None               # detections in a row an instance may go unmatched while visible
    lost_frames: int = 90                            # frames a lost instance is kept for the tracker to re-find it
    max_instances: int = 16                          # instances per target at most (the most probable first)
    feature_frames: int = 8                          # frames kept for a late detection's instances to start on
    dtype: str = "fp32"                              # weights: fp32 or bf16

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, source: str) -> Sam3Settings:
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{source}: unknown sam3 keys {unknown}; known: {sorted(known)}")
        settings = cls(**raw)
        if settings.dtype not in ("fp32", "bf16"):
            raise ValueError(f"{source}: sam3.dtype must be fp32 or bf16, got {settings.dtype!r}")
        if min(settings.lost_frames, settings.max_instances, settings.feature_frames) < 1:
            raise ValueError(f"{source}: sam3.lost_frames, max_instances and feature_frames must be >= 1")
        return settings

    def resolved(self, config) -> Sam3Settings:
        """Every ``None`` filled from the model's ``Sam3VideoConfig``."""
        values = {"score_threshold_detection": config.score_threshold_detection,
                  "det_nms_thresh": config.det_nms_thresh, "new_det_thresh": config.new_det_thresh,
                  "assoc_iou_thresh": config.assoc_iou_thresh, "fill_hole_area": config.fill_hole_area,
                  "unmatched_limit": config.hotstart_unmatch_thresh}
        return Sam3Settings(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                               else values[f.name] for f in fields(self)})


@dataclass
class FrameEncoding:
    """One frame through the shared backbone: the detector's input and the tracker's features."""

    vision: Any          # Sam3VisionEncoderOutput (the detector reads it; dropped once the frame is old)
    tracker: dict        # {"vision_feats", "vision_pos_embeds"} for the tracker's cache


@dataclass
class Detections:
    """Instances found on one frame, most probable first: low-res mask logits, probabilities, xyxy boxes (0..1)."""

    masks: torch.Tensor   # (K, h, w)
    scores: torch.Tensor  # (K,)
    boxes: torch.Tensor   # (K, 4)

    def __len__(self) -> int:
        return int(self.scores.numel())


class Sam3Backend(GroundingBackend):
    name: ClassVar = "sam3"
    answers: ClassVar = "instances"

    def __init__(self, model, tokenizer, folder: Sam3Folder, settings: Sam3Settings) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.folder = folder
        self.settings = settings.resolved(model.config)
        self.text_positions = int(model.config.detector_config.text_config.max_position_embeddings)
        self._text_cache: dict[str, tuple[PhraseTokens, Any]] = {}

    @property
    def tracker(self):
        return self.model

    @property
    def image_size(self) -> int:
        return self.folder.frames.size

    def eval(self) -> Sam3Backend:
        """The concept engine holds the backend as its model (as the GLUS engine holds a GLUSModel)."""
        self.model.eval()
        return self

    def new_memory_bank(self) -> None:
        """No SAM 2 memory bank: each target's instances live in their own tracker session (``sam3_tracks``)."""
        return None

    def to(self, device: str | torch.device) -> Sam3Backend:
        """Move the model (the ROS node's off switch moves it to the CPU); cached text encodings are dropped."""
        self.model.to(device)
        self._text_cache.clear()
        return self

    # --- requests -------------------------------------------------------------------------------
    def clean(self, expression: str) -> str:
        """The noun phrase SAM 3 is asked (``sam3_inputs.concept_phrase``), checked to fit the text encoder."""
        phrase = concept_phrase(expression)
        tokenize_phrase(self.tokenizer, phrase, self.text_positions)
        return phrase

    def phrase_embedding(self, phrase: str) -> tuple[PhraseTokens, Any]:
        """Tokens and text-encoder output of a phrase, computed once per phrase."""
        if phrase not in self._text_cache:
            tokens = tokenize_phrase(self.tokenizer, phrase, self.text_positions)
            tokens = PhraseTokens(tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device))
            text = self.model.detector_model.get_text_features(input_ids=tokens.input_ids,
                                                               attention_mask=tokens.attention_mask, return_dict=True)
            if len(self._text_cache) >= 64:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[phrase] = (tokens, text)
        return self._text_cache[phrase]

    # --- the model in pieces --------------------------------------------------------------------
    def pixels(self, frame: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) model input of one RGB uint8 frame (``sam3_inputs.preprocess_frames``)."""
        return preprocess_frames([frame], self.folder.frames, self.device).to(self.model.dtype)

    def encode(self, frame: np.ndarray) -> FrameEncoding:
        pixels = self.pixels(frame)
        vision = self.model.detector_model.get_vision_features(pixel_values=pixels)
        feats, positions = self.model.get_vision_features_for_tracker(vision_embeds=vision)
        return FrameEncoding(vision, {"vision_feats": feats, "vision_pos_embeds": positions})

    def detect(self, encoding: FrameEncoding, phrase: str) -> Detections:
        """Every instance of ``phrase`` on the encoded frame (module doc)."""
        tokens, text = self.phrase_embedding(phrase)
        out = self.model.detector_model(vision_embeds=encoding.vision, text_embeds=text,
                                        attention_mask=tokens.attention_mask)
        probs = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0].float()
        masks = out.pred_masks[0].float()
        s = self.settings
        keep = mask_nms(probs, masks, s.score_threshold_detection, s.det_nms_thresh)
        index = torch.nonzero(keep).flatten()
        index = index[torch.argsort(probs[index], descending=True, stable=True)][:s.max_instances]
        return Detections(fill_holes(masks[index], s.fill_hole_area), probs[index], out.pred_boxes[0, index].float())

    # --- the common interface -------------------------------------------------------------------
    @torch.inference_mode()
    def ground(self, window: Sequence[np.ndarray], expressions: Sequence[str],
               context: Sequence[np.ndarray] = (), timestamps: Sequence[float] | None = None,
               ) -> list[TargetGrounding]:
        """Per window frame, one interior point per detected instance; ``count`` the most instances on a frame.
        ``context`` and ``timestamps`` are accepted for the common interface and not read (SAM 3 looks at one
        frame at a time)."""
        height, width = check_window(window, ())
        phrases = [self.clean(e) for e in expressions]
        results = [TargetGrounding(p, count=0) for p in phrases]
        for t, frame in enumerate(window):
            encoding = self.encode(frame)
            for phrase, result in zip(phrases, results, strict=True):
                found = self.detect(encoding, phrase)
                points = []
                for mask in (logits_to_frame(found.masks[:, None], height, width) > 0).cpu().numpy():
                    points += [(x / width, y / height) for x, y in component_points(mask)[:1]]
                result.frames[t] = FrameGrounding(points=points,
                                                  score=float(found.scores.max()) if len(found) else 0.0)
                result.count = max(result.count or 0, len(found))
        return results


def load_sam3_backend(folder: str | Path, settings: Sam3Settings, device: str = "cpu") -> Sam3Backend:
    """SAM 3 from a local folder through transformers' ``Sam3VideoModel`` (no download, no remote code)."""
    from transformers import AutoTokenizer, Sam3VideoModel

    from glus_ros.devices import resolve_device

    checked = read_sam3_folder(folder)   # all file errors before anything heavy loads
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[settings.dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checked.path))
        model, info = Sam3VideoModel.from_pretrained(str(checked.path), dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(f"{checked.path}: cannot load the SAM 3 model: {exc}") from exc
    check_loaded_weights(info, checked.path)
    if model.low_res_mask_size != model.tracker_model.prompt_encoder.mask_input_size[0]:
        raise ValueError(f"{checked.path}: low_res_mask_size {model.low_res_mask_size} is not the tracker's mask "
                         f"size {model.tracker_model.prompt_encoder.mask_input_size[0]}")
    return Sam3Backend(model.to(resolve_device(device)), tokenizer, checked, settings)
