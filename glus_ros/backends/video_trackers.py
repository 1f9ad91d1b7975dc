"""SAM 3's tracker and EdgeTAM as point trackers (``points/trackers.py``), from a local folder via transformers.

Why: a pointing backend (Molmo2) needs something to turn its points into masks and carry them; SAM 2 from an
official ``.pt`` is one choice (``points/sam2_points.py``), these are the others (docs/backends.md says which for
what). Both run transformers' own video tracker forward (``Sam3TrackerVideoModel``, ``EdgeTamVideoModel``) frame
by frame through the streaming session the SAM 3 concept backend already drives (``sam3_tracks.InstanceTracks``):

- each target's track is its own session; frames are numbered in the order the track sees them (the seed 0, then
  1, 2, ...), so memory reads the frames it was given as consecutive, as SAM 2's memory bank does, in either
  direction of an offline pass;
- a seed makes each point its own object prompted by that one positive click on the seed frame; the target's
  mask is the union (max) of their logits, its object score the highest. The seed frame's memory is then
  rewritten as "object present" (the points assert it), from the binarised masks, as a prompted frame is;
- later frames are the tracker's forward with its memory written; what the tracker will not read again is
  pruned, so a track holds a bounded number of frames however long the stream runs;
- frames are preprocessed by the project (``sam3_inputs.preprocess_frames``; the processors are torchvision
  classes), the session's dtype is the weights' torch dtype.

EdgeTAM's image encoder is a timm RepViT backbone (transformers' ``TimmWrapper``), and timm needs torchvision:
without both the folder is refused before loading with one error naming what does not import.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glus_ros.backends.molmo2_folder import check_loaded_weights
from glus_ros.backends.sam3_inputs import preprocess_frames
from glus_ros.backends.sam3_tracks import InstanceTracks
from glus_ros.backends.tracker_folder import TrackerFolder, read_tracker_folder
from glus_ros.model.sam2_head import MaskPrediction
from glus_ros.points.coords import Point, frame_to_sam
from glus_ros.points.trackers import PointTrack, PointTracker

CACHED_FRAMES = 2     # frames whose features a track keeps (the one it is on, and the one before)
TRACKER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def edgetam_missing() -> list[str]:
    """The packages EdgeTAM's backbone needs that do not import here (empty: it can run)."""
    missing = []
    for name in ("torchvision", "timm"):
        try:
            importlib.import_module(name)
        except Exception:   # not installed, or installed but broken (a torchvision built for another torch)
            missing.append(name)
    return missing


class VideoTrackerFrames:
    """A video's tracker features, encoded when first read."""

    def __init__(self, tracker: VideoPointTracker, frames: Sequence[np.ndarray]) -> None:
        self.tracker = tracker
        self.frames = frames
        self._features: dict[int, dict] = {}

    def features(self, index: int) -> dict:
        if index not in self._features:
            self._features[index] = self.tracker.encode(self.frames[index])
        return self._features[index]

    def keep_only(self, keep: set[int]) -> None:
        for index in [i for i in self._features if i not in keep]:
            del self._features[index]


class VideoTrack(PointTrack):
    """One target in its own tracker session (module doc)."""

    def __init__(self, owner: VideoPointTracker) -> None:
        self.owner = owner
        self.tracks = InstanceTracks(owner, CACHED_FRAMES)
        self.index = -1
        self._seeded: tuple[dict, list[Point], int, int] | None = None

    def _push(self, features: dict) -> int:
        self.index += 1
        self.tracks.add_frame(self.index, features)
        return self.index

    def seed(self, frame: dict, points: Sequence[Point], height: int, width: int) -> MaskPrediction:
        if not points:
            raise ValueError("an anchor needs at least one point")
        if self.index >= 0:
            raise ValueError("a track is seeded once, on its first frame (start a new track to re-seed)")
        step = self._push(frame)
        size = self.owner.image_size
        coords = torch.tensor(frame_to_sam(points, height, width, size), dtype=torch.float32)
        for obj_id, xy in enumerate(coords):
            self.tracks.seed_points(step, obj_id, xy[None], torch.ones(1, dtype=torch.int32))
        session = self.tracks.session
        logits = torch.cat([session.output_dict_per_obj[session.obj_id_to_idx(i)]["cond_frame_outputs"][step]
                            ["pred_masks"].reshape(1, *self.owner.low_res_shape) for i in range(len(coords))])
        self.tracks.write_memory(step, logits, present_always=True)
        self._seeded = (frame, list(points), height, width)
        present = torch.ones(1, 1, device=logits.device)
        return self.owner.prediction(logits, present)

    def step(self, frame: dict) -> MaskPrediction:
        if self._seeded is None:
            raise ValueError("step needs a seeded track")
        step = self._push(frame)
        _, logits, scores = self.tracks.track(step)
        self.tracks.prune(step)
        return self.owner.prediction(logits, scores.float().max().view(1, 1))

    def fork(self) -> VideoTrack:
        if self._seeded is None:
            raise ValueError("fork needs a seeded track")
        track = VideoTrack(self.owner)
        track.seed(*self._seeded)
        return track

    def __len__(self) -> int:
        session = self.tracks.session
        if not session.obj_ids:
            return 0
        outputs = session.output_dict_per_obj[0]
        return len(outputs["cond_frame_outputs"]) + len(outputs["non_cond_frame_outputs"])


class VideoPointTracker(PointTracker):
    """A transformers video tracker (SAM 3's or EdgeTAM) as a ``PointTracker``; also the host ``InstanceTracks``
    reads (``tracker_model``, ``device``, ``dtype``, ``run_memory_encoder``)."""

    def __init__(self, model, folder: TrackerFolder) -> None:
        self.model = model.eval()
        self.folder = folder
        self.name = f"{folder.kind} tracker ({folder.path.name})"
        mask_size = model.prompt_encoder.mask_input_size
        self.low_res_shape = (int(mask_size[0]), int(mask_size[1]))

    @property
    def tracker_model(self):
        return self.model

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def image_size(self) -> int:
        return self.folder.frames.size

    @property
    def low_res_mask_size(self) -> int:
        return self.low_res_shape[0]

    def prediction(self, logits: torch.Tensor, object_score: torch.Tensor) -> MaskPrediction:
        """(N, h, w) per-point logits -> the target's prediction: their union, resized to ``image_size`` as SAM 2
        resizes its low-resolution masks."""
        low = logits.float().amax(dim=0)[None, None]
        size = self.image_size
        high = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        return MaskPrediction(low, high, torch.ones_like(object_score), object_score.float())

    def run_memory_encoder(self, session, step: int, masks: torch.Tensor, object_score_logits: torch.Tensor):
        """Memory of ``step`` from given masks (a prompted frame's: binarised, as the tracker encodes clicks)."""
        feats = session.cache.get_vision_features(step)["vision_feats"]
        return self.model._encode_new_memory(current_vision_feats=feats[-1], pred_masks_high_res=masks,
                                             object_score_logits=object_score_logits, is_mask_from_pts=True)

    def encode(self, image: np.ndarray) -> dict:
        pixels = preprocess_frames([image], self.folder.frames, self.device).to(self.dtype)
        out = self.model.get_image_features(pixels)
        return {"vision_feats": out.fpn_hidden_states, "vision_pos_embeds": out.fpn_position_encoding}

    def video_frames(self, frames: Sequence[np.ndarray]) -> VideoTrackerFrames:
        return VideoTrackerFrames(self, frames)

    def new_track(self) -> VideoTrack:
        return VideoTrack(self)


def load_video_tracker(folder: str | Path, device: str = "cpu", dtype: str = "fp32") -> VideoPointTracker:
    """SAM 3's tracker or EdgeTAM from a local folder (``tracker_folder`` says which); one clear error otherwise."""
    from glus_ros.devices import resolve_device

    checked = read_tracker_folder(folder)   # all file errors before anything heavy loads
    if dtype not in TRACKER_DTYPES:
        raise ValueError(f"tracker dtype must be one of {sorted(TRACKER_DTYPES)}, got {dtype!r}")
    if checked.kind == "edgetam":
        missing = edgetam_missing()
        if missing:
            raise ValueError(f"{checked.path} is EdgeTAM, whose image encoder is a timm backbone (timm needs "
                              f"torchvision): {' and '.join(missing)} cannot be imported here. Install torchvision "
                              "(the build matching torch) and timm, or use a SAM 3 tracker folder or "
                              "--sam2-checkpoint")
        from transformers import EdgeTamVideoModel as model_class
    else:
        from transformers import Sam3TrackerVideoModel as model_class
    try:
        model, info = model_class.from_pretrained(str(checked.path), dtype=TRACKER_DTYPES[dtype],
                                                  output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(f"{checked.path}: cannot load the {checked.kind} tracker: {exc}") from exc
    check_loaded_weights(info, checked.path)
    return VideoPointTracker(model.to(resolve_device(device)), checked)
