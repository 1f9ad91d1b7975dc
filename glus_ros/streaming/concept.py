"""The streaming engine for a concept backend (SAM 3): every instance of a noun phrase, each tracked on its own.

The loops, schedules, target table, drops and statistics are :class:`StreamingEngine`'s. What differs:

* every frame goes once through SAM 3's shared vision backbone (``Sam3Backend.encode``); its tracker features
  feed every target's tracker, and the newest frame's detector input is what a grounding reads;
* a grounding is **detection**: SAM 3's detector on the snapshot's newest frame with the target's noun phrase
  (in the grounding worker for the "live" schedule, inline for "full" / "fast"); when is it due: a new target,
  no instance visible (score below ``reground_below``), or ``reground_every`` frames since the last detection;
* the **tracker runs on every frame**: each target's instances are propagated from memory, holes filled and
  overlaps resolved (``backends/sam3_postprocess``), and the result written to memory
  (``backends/sam3_tracks``);
* a landed detection (made on frame ``s``, applied on the tracker's next frame) is matched to the instances'
  masks **on that same frame s** (kept for ``feature_frames`` frames): a detection overlapping an instance
  (mask IoU >= ``assoc_iou_thresh``) confirms it; one overlapping none with probability >= ``new_det_thresh``
  starts a new instance, seeded on frame s with its mask and carried to now by memory (a stale mask is never
  pasted onto a newer frame); a visible instance that ``unmatched_limit`` detections in a row do not confirm is
  dropped (SAM 3's "unmatched" heuristic: a track the detector keeps disagreeing with).

Ids: instance k of target ``<id>`` is published as ``<id>/<k>`` (``instance_target_id``), k counted from 0 in
order of birth and never reused. An instance is **born** when a detection starts it (state "grounding" on
that frame), **tracked** while SAM 3's tracker sees it (object score above 0.5: state "tracking"), **lost**
when the tracker loses it (state "lost", empty mask, kept under its id); it is **re-found** when the tracker
sees it again within ``lost_frames`` frames (same id); after that it is forgotten, and a detection of the same
object later starts a new id. A target with no instance yet gives one output under its own id (state
"grounding" until the first detection lands, then "lost"). A counting question ("how many mugs are there?") asks
for its objects ("mugs") and answers, in every output's ``answer``, with the number of instances visible on the
frame. A region target (box or point) becomes SAM 3's geometric prompt: one instance ``<id>/0`` seeded by the
tracker's box (corner points) or point prompt on the newest frame when it is first grounded; it is not
detected again. Open questions (GLUS's grounded answers) are refused when the command arrives.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from glus_ros.backends.sam3 import Detections, FrameEncoding, Sam3Backend
from glus_ros.backends.sam3_postprocess import fill_holes, mask_iou, non_overlapping
from glus_ros.backends.sam3_tracks import InstanceTracks
from glus_ros.model.prompting import clean_expression
from glus_ros.model.task_adapter import COUNTING, task_of
from glus_ros.model.transforms import logits_to_frame
from glus_ros.streaming.config import EngineConfig
from glus_ros.streaming.engine import StreamingEngine
from glus_ros.streaming.tracks import Grounding, TargetTrack, Window, is_question
from glus_ros.streaming.types import FrameResult, StreamFrame, TargetOutput, TargetSpec

log = logging.getLogger(__name__)

VISIBLE_ABOVE = 0.5   # sigmoid(object score) above this: the tracker sees the instance


def instance_target_id(target_id: str, k: int) -> str:
    """The output id of a concept target's k-th instance."""
    return f"{target_id}/{k}"


@dataclass(eq=False)
class _Instance:
    obj_id: int                 # the tracker session's object id
    k: int                      # the output index (``instance_target_id``)
    score: float = 1.0
    state: str = "grounding"
    lost_for: int = 0           # frames since the tracker last saw it
    unmatched: int = 0          # detections in a row that did not confirm it while it was visible


@dataclass(eq=False)
class _ConceptTarget(TargetTrack):
    phrase: str = ""
    counting: bool = False
    tracks: InstanceTracks | None = None
    instances: dict[int, _Instance] = field(default_factory=dict)   # obj_id -> instance, in order of birth
    next_k: int = 0
    # step -> (object ids, (N, h, w) bool low-res masks) of the recent frames, for late detections
    recent: dict[int, tuple[list[int], torch.Tensor]] = field(default_factory=dict)


@dataclass(eq=False)
class _Detection(Grounding):
    detections: Detections | None = None   # None: a region target's geometric prompt


class ConceptStreamingEngine(StreamingEngine):
    """Tracks every instance of each target's noun phrase (``answers == "instances"``); see the module doc."""

    def __init__(self, backend: Sam3Backend, config: EngineConfig | None = None,
                 on_result: Callable[[FrameResult], None] | None = None) -> None:
        if backend.answers != "instances":
            raise ValueError(f"the {backend.name} backend answers with {backend.answers}, not instances")
        config = config or EngineConfig()
        self.backend = backend
        self._encodings: dict[int, FrameEncoding] = {}   # the newest frame's detector input
        super().__init__(backend, config, on_result)  # type: ignore[arg-type]

    # --- targets --------------------------------------------------------------------------------
    def _window_sizes(self) -> tuple[int, int]:
        return 0, 1   # detection reads the newest frame only

    def _checked_spec(self, spec: TargetSpec) -> TargetSpec:
        spec = self._checked_spec_common(spec)
        if spec.region is not None:  # the expression is only a label
            region = self._checked_region(spec.region)
            empty = isinstance(spec.expression, str) and not spec.expression.strip()
            return dataclasses.replace(spec, expression="" if empty else clean_expression(spec.expression),
                                       region=region)
        if isinstance(spec.expression, str) and is_question(spec.expression):
            raise ValueError(f"the {self.backend.name} backend finds every instance of a noun phrase ('the mugs') "
                             "and answers counting questions ('how many ...?'); a grounded answer to a question "
                             "needs a GLUS model")
        self.backend.clean(spec.expression)   # empty phrase, too many tokens: refused now, not in the worker
        return dataclasses.replace(spec, expression=clean_expression(spec.expression))

    def _new_target(self, spec: TargetSpec) -> _ConceptTarget:
        phrase = "" if spec.region is not None else self.backend.clean(spec.expression)
        return _ConceptTarget(spec, None, phrase=phrase, counting=task_of(spec.expression) == COUNTING,
                              tracks=self._new_tracks())

    def _new_tracks(self) -> InstanceTracks:
        return InstanceTracks(self.backend.model, self.backend.settings.feature_frames)

    def _reset_locked(self) -> None:
        super()._reset_locked()
        self._encodings.clear()
        with self._targets_lock:
            for target in self._targets.values():
                assert isinstance(target, _ConceptTarget)
                target.tracks = self._new_tracks()
                target.instances.clear()
                target.recent.clear()
                target.answer = ""

    # --- frames ---------------------------------------------------------------------------------
    def _push_frame(self, frame: StreamFrame) -> FrameEncoding:  # type: ignore[override]
        """One backbone pass; the frame joins the history (the encoding itself is kept for the newest only)."""
        encoding = self.backend.encode(frame.image)
        step = self._step
        self._record_frame(frame, np.empty(0, dtype=np.uint8))
        with self._frames_lock:
            self._encodings = {step: encoding}
        return encoding

    def _snapshot(self) -> Window:
        window = super()._snapshot()
        with self._frames_lock:
            window.inputs = {window.step: self._encodings[window.step]}  # type: ignore[dict-item]
        return window

    # --- detection (the grounding) --------------------------------------------------------------
    def _due(self, target: TargetTrack) -> bool:
        if target.spec.region is not None:
            return target.prompt is None or target.needs_ground
        return super()._due(target)

    def _due_live(self, target: TargetTrack, newest: int) -> bool:
        if target.spec.region is not None:
            return not target.in_flight and target.pending is None and (target.prompt is None or target.needs_ground)
        return super()._due_live(target, newest)

    def _compute_groundings(self, window: Window, targets: list[TargetTrack]) -> list[tuple[TargetTrack, Grounding]]:
        encoding = window.inputs[window.step]
        assert isinstance(encoding, FrameEncoding)
        results: list[tuple[TargetTrack, Grounding]] = []
        with self._mllm_lock:
            for target in targets:
                assert isinstance(target, _ConceptTarget)
                found = None if target.spec.region is not None else self.backend.detect(encoding, target.phrase)
                results.append((target, _Detection(window.step, window.seq, window.epoch, detections=found)))
        return results

    # --- the tracker ----------------------------------------------------------------------------
    def _infer(self, frame: StreamFrame, active: list[TargetTrack]) -> list[TargetOutput]:
        encoding = self._push_frame(frame)
        step = self._step - 1
        for target in active:
            assert isinstance(target, _ConceptTarget) and target.tracks is not None
            target.tracks.add_frame(step, encoding.tracker)
        if not active:
            return []
        landed = {id(t): g for t, g in self._landed_groundings(active) if g.epoch == self._epoch}
        outputs: list[TargetOutput] = []
        for target in active:
            assert isinstance(target, _ConceptTarget)
            grounding = landed.get(id(target))
            outputs += self._track(target, step, frame,
                                   grounding if isinstance(grounding, _Detection) else None)
        return outputs

    def _track(self, target: _ConceptTarget, step: int, frame: StreamFrame,
               grounding: _Detection | None) -> list[TargetOutput]:
        tracks = target.tracks
        assert tracks is not None
        ids, logits, object_scores = tracks.propagate(step)
        target.recent[step] = (ids, logits > 0)
        born: set[int] = set()
        if grounding is not None:
            born = self._apply_detection(target, grounding, step)
            if born or len(ids) != len(tracks.ids):   # new instances carried from their seed frame to now
                ids, logits, object_scores = tracks.propagate(step)
        scores = torch.sigmoid(object_scores.float())
        settings = self.backend.settings
        logits = non_overlapping(fill_holes(logits.float(), int(settings.fill_hole_area)), scores)
        tracks.write_memory(step, logits)
        target.recent[step] = (ids, logits > 0)
        for old in [s for s in target.recent if s <= step - settings.feature_frames]:
            del target.recent[old]
        tracks.prune(step)
        return self._instance_outputs(target, ids, logits, scores, born, step, frame)

    def _apply_detection(self, target: _ConceptTarget, grounding: _Detection, step: int) -> set[int]:
        """Match a landed detection to the instances on its own frame; start the new ones (module doc).
        Returns the object ids born."""
        tracks = target.tracks
        assert tracks is not None
        target.needs_ground = False
        target.since_ground = 0
        target.grounded_step, target.grounded_seq = grounding.step, grounding.seq
        if target.prompt is None:
            target.prompt = torch.zeros(0)   # grounded once: "lost" rather than "grounding" when nothing is seen
        seen = target.recent.get(grounding.step)
        if seen is None or not tracks.has_frame(grounding.step):
            log.warning("target '%s': a detection on a frame the tracker no longer holds is dropped",
                        target.spec.target_id)
            target.needs_ground = True
            return set()
        if grounding.detections is None:
            return self._seed_region(target, grounding.step)
        found = grounding.detections
        settings = self.backend.settings
        trk_ids, trk_masks = seen
        det_masks = found.masks > 0
        if trk_ids and len(found):
            ious = mask_iou(det_masks, trk_masks)
        else:
            ious = torch.zeros(len(found), len(trk_ids), device=det_masks.device)
        confirmed = (ious >= self.backend.model.config.trk_assoc_iou_thresh).any(dim=0).tolist()
        visible = trk_masks.flatten(1).any(dim=1).tolist() if trk_ids else []
        drop = []
        for obj_id, ok, shown in zip(trk_ids, confirmed, visible, strict=True):
            instance = target.instances.get(obj_id)
            if instance is None:
                continue
            instance.unmatched = 0 if ok else instance.unmatched + int(shown)
            if instance.unmatched >= int(settings.unmatched_limit):
                drop.append(obj_id)
        matches_any = (ious >= float(settings.assoc_iou_thresh)).any(dim=1) if trk_ids else \
            torch.zeros(len(found), dtype=torch.bool, device=det_masks.device)
        new = [i for i in range(len(found)) if not bool(matches_any[i])
               and float(found.scores[i]) >= float(settings.new_det_thresh)]
        room = settings.max_instances - (len(target.instances) - len(drop))
        new = new[:max(room, 0)]
        if drop:
            tracks.remove(drop)
            for obj_id in drop:
                log.info("target '%s': instance %d dropped (no detection confirmed it %d times)",
                         target.spec.target_id, target.instances.pop(obj_id).k, settings.unmatched_limit)
        if not new:
            return set()
        born = self._born(target, len(new))
        tracks.seed_masks(grounding.step, born, det_masks[new])
        return set(born)

    def _born(self, target: _ConceptTarget, count: int) -> list[int]:
        ids = []
        for _ in range(count):
            instance = _Instance(obj_id=target.next_k, k=target.next_k)
            target.next_k += 1
            target.instances[instance.obj_id] = instance
            ids.append(instance.obj_id)
        return ids

    def _seed_region(self, target: _ConceptTarget, step: int) -> set[int]:
        """A region target's one instance from the tracker's box (corner points) or point prompt."""
        region = target.spec.region
        assert region is not None and target.tracks is not None and self._size is not None
        height, width = self._size
        region.validate(width, height)
        size = self.backend.image_size
        scale = torch.tensor([size / width, size / height])
        if region.kind == "box":
            coords = torch.tensor([[region.x0, region.y0], [region.x1, region.y1]], dtype=torch.float32) * scale
            labels = torch.tensor([2, 3])
        else:
            coords = torch.tensor([[region.x0, region.y0]], dtype=torch.float32) * scale
            labels = torch.tensor([1])
        born = self._born(target, 1)
        target.tracks.seed_points(step, born[0], coords.to(self.backend.device), labels.to(self.backend.device))
        return set(born)

    def _instance_outputs(self, target: _ConceptTarget, ids: list[int], logits: torch.Tensor, scores: torch.Tensor,
                          born: set[int], step: int, frame: StreamFrame) -> list[TargetOutput]:
        height, width = frame.image.shape[:2]
        masks = (logits_to_frame(logits[:, None], height, width) > 0).cpu().numpy() if ids else []
        states: list[tuple[_Instance, np.ndarray, float, str]] = []
        forget = []
        for i, obj_id in enumerate(ids):
            instance = target.instances.get(obj_id)
            if instance is None:
                continue
            score = float(scores[i])
            mask = masks[i]
            if score > VISIBLE_ABOVE and mask.any():
                instance.lost_for = 0
                state = "grounding" if obj_id in born else "tracking"
            else:
                instance.lost_for += 1
                mask = np.zeros((height, width), dtype=bool)
                state = "lost"
                if instance.lost_for > self.backend.settings.lost_frames and target.spec.region is None:
                    forget.append(obj_id)
                    continue
            instance.score, instance.state = score, state
            states.append((instance, mask, score, state))
        if forget:
            target.tracks.remove(forget)   # type: ignore[union-attr]
            for obj_id in forget:
                log.info("target '%s': instance %d forgotten (lost for %d frames)", target.spec.target_id,
                         target.instances.pop(obj_id).k, self.backend.settings.lost_frames)
        visible = [s for s in states if s[3] != "lost"]
        target.score = max((s[2] for s in visible), default=0.0)
        target.state = "tracking" if visible else ("grounding" if target.prompt is None else "lost")
        if target.counting:
            target.answer = str(len(visible))
        target.since_ground += 1
        if not states:
            empty = np.zeros((height, width), dtype=bool)
            return [self._output(target, empty, 0.0, target.state, frame)]
        return [self._output(target, mask, score, state, frame,
                             output_id=instance_target_id(target.spec.target_id, instance.k))
                for instance, mask, score, state in sorted(states, key=lambda s: s[0].k)]
