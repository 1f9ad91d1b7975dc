"""One target's SAM 3 instances in the tracker: a streaming inference session of transformers' SAM 3 tracker.

Why a wrapper: the session of ``Sam3VideoModel`` keeps every frame's outputs for offline propagation; a robot
streams for hours. This keeps what the tracker reads and nothing more, and exposes the four things the concept
engine does to a target's instances:

- ``seed_masks`` / ``seed_box`` / ``seed_points``: new instances from detection masks (or a region prompt) on the
  frame they were made on (a conditioning frame: the mask is written to memory as given);
- ``propagate``: every instance's mask and object score on a frame, from memory (transformers' tracker forward,
  memory not yet written);
- ``write_memory``: the frame's post-processed masks (holes filled, overlaps resolved) encoded into memory, as
  ``Sam3VideoModel`` does after its heuristics;
- ``remove``: an instance forgotten.

What the tracker reads (transformers' ``Sam3TrackerVideoModel``): the ``num_maskmem - 1`` previous frames'
memories (stride 1), the ``max_cond_frame_num`` conditioning frames closest in time, and object pointers of the
``max_object_pointers_in_encoder`` previous frames; ``prune`` drops anything older. The frame features come from
the engine's shared per-frame encoding (one vision pass per frame for all targets), cached per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

# the detection and the region prompt of an instance share this prompt id (the session groups objects by it)
PROMPT_ID = 0


class _StreamSession(Sam3VideoInferenceSession):
    """The video session with what the tracker forward reads when frames are given by index (not stored)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, cached_frames: int) -> None:
        super().__init__(inference_device=device, inference_state_device=device, video_storage_device=device,
                         dtype=dtype, max_vision_features_cache_size=cached_frames)
        self.obj_with_new_inputs: list[int] = []
        self.newest = -1

    @property
    def num_frames(self) -> int:  # the stream so far: the tracker bounds its pointer look-back by it
        return self.newest + 1

    def add_point_inputs(self, obj_idx: int, frame_idx: int, inputs: dict[str, torch.Tensor]) -> None:
        self.point_inputs_per_obj[obj_idx][frame_idx] = {k: v.to(self.inference_device) for k, v in inputs.items()}


class InstanceTracks:
    """A target's instances in SAM 3's tracker (module doc). ``ids`` are the session's object ids."""

    def __init__(self, model, cached_frames: int) -> None:
        self.model = model
        self.tracker = model.tracker_model
        self.cached_frames = cached_frames
        self._features: dict[int, dict] = {}
        self.session = _StreamSession(model.device, model.dtype, cached_frames)
        config = self.tracker.config
        self.keep_frames = max(config.num_maskmem, config.max_object_pointers_in_encoder) + cached_frames
        self.keep_cond = config.max_cond_frame_num if config.max_cond_frame_num > 0 else 4

    @property
    def ids(self) -> list[int]:
        return list(self.session.obj_ids)

    def add_frame(self, step: int, features: dict) -> None:
        """The frame's tracker features ({"vision_feats", "vision_pos_embeds"}) under its step."""
        self._features[step] = features
        for old in [s for s in self._features if s <= step - self.cached_frames]:
            del self._features[old]
        self.session.newest = max(self.session.newest, step)
        self.session.cache.cache_vision_features(step, features)

    def has_frame(self, step: int) -> bool:
        return step in self._features

    def _ensure_cached(self, step: int) -> None:
        if self.session.cache.get_vision_features(step) is None:
            if step not in self._features:
                raise KeyError(f"frame step {step} is no longer held by the tracker")
            self.session.cache.cache_vision_features(step, self._features[step])

    def _forward(self, step: int, write_memory: bool) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        self._ensure_cached(step)
        out = self.tracker(inference_session=self.session, frame_idx=step, run_mem_encoder=write_memory)
        count = len(out.object_ids)
        logits = out.pred_masks.reshape(count, *out.pred_masks.shape[-2:])
        return list(out.object_ids), logits, out.object_score_logits.reshape(count)

    def track(self, step: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """``propagate`` with the tracker's own memory written (a point tracker has no post-processing to wait for)."""
        return self._forward(step, write_memory=True)

    def propagate(self, step: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """(ids, (N, h, w) low-resolution mask logits, (N,) object-score logits) of every instance on ``step``."""
        if not self.session.obj_ids:
            size = self.model.low_res_mask_size
            return [], torch.zeros(0, size, size, device=self.model.device), torch.zeros(0, device=self.model.device)
        return self._forward(step, write_memory=False)

    def _add(self, step: int, new_ids: Sequence[int]) -> None:
        for obj_id in new_ids:
            self.session.obj_id_to_prompt_id[obj_id] = PROMPT_ID
        self.session.obj_with_new_inputs = list(new_ids)
        self._forward(step, write_memory=True)

    def seed_masks(self, step: int, new_ids: Sequence[int], masks: torch.Tensor) -> None:
        """New instances from (N, h, w) bool masks on ``step`` (a frame the tracker still holds)."""
        self._ensure_cached(step)
        for obj_id, mask in zip(new_ids, masks, strict=True):
            index = self.session.obj_id_to_idx(obj_id)
            self.session.add_mask_inputs(index, step, mask[None, None])
        self._add(step, new_ids)

    def seed_points(self, step: int, obj_id: int, coords: torch.Tensor, labels: torch.Tensor) -> None:
        """A new instance from point prompts: ``coords`` (P, 2) in the model's input pixels, ``labels`` (P,)
        (1 positive, 0 negative, 2 / 3 a box's top-left / bottom-right corner)."""
        self._ensure_cached(step)
        index = self.session.obj_id_to_idx(obj_id)
        self.session.add_point_inputs(index, step, {"point_coords": coords.float()[None, None],
                                                    "point_labels": labels.to(torch.int32)[None, None]})
        self._add(step, [obj_id])

    def write_memory(self, step: int, logits: torch.Tensor, present_always: bool = False) -> None:
        """Encode (N, h, w) post-processed mask logits of every instance (``ids`` order) as ``step``'s memory;
        an instance is written as present where its mask is not empty (``present_always``: everywhere, as points
        that assert the object is there)."""
        if not self.session.obj_ids:
            return
        self._ensure_cached(step)
        high = logits[:, None].to(self.model.dtype)
        seen = torch.ones(len(logits), dtype=torch.bool, device=logits.device) if present_always else \
            (logits > 0).flatten(1).any(dim=1)
        present = torch.where(seen, 10.0, -10.0).to(high)[:, None, None]
        features, positions = self.model.run_memory_encoder(self.session, step, high, present)
        for index in range(len(self.session.obj_ids)):
            outputs = self.session.output_dict_per_obj[index]
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                if step in outputs[kind]:
                    outputs[kind][step]["maskmem_features"] = features[:, index:index + 1]
                    outputs[kind][step]["maskmem_pos_enc"] = positions[:, index:index + 1]

    def remove(self, obj_ids: Sequence[int]) -> None:
        for obj_id in obj_ids:
            self.session.remove_object(obj_id)
        if not self.session.obj_ids:   # the session reset itself, its cache included
            for step, features in self._features.items():
                self.session.cache.cache_vision_features(step, features)

    def prune(self, step: int) -> None:
        """Forget outputs the tracker will not read again (module doc)."""
        oldest = step - self.keep_frames
        session = self.session
        for index in range(len(session.obj_ids)):
            outputs = session.output_dict_per_obj[index]
            for old in [s for s in outputs["non_cond_frame_outputs"] if s < oldest]:
                del outputs["non_cond_frame_outputs"][old]
            cond = sorted(outputs["cond_frame_outputs"])
            for old in cond[:-self.keep_cond]:
                del outputs["cond_frame_outputs"][old]
            for store in (session.frames_tracked_per_obj[index], session.mask_inputs_per_obj[index],
                          session.point_inputs_per_obj[index]):
                for old in [s for s in store if s < oldest]:
                    del store[old]
