"""Molmo2 behind the tracker: a tiny random model loaded from the released folder layout, its prompts, its
(garbage) answers never crashing, and known answers (forced decoding) turned into points and SAM 2 masks."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import LogitsProcessorList

from glus_ros.backends.loading import load_backend
from glus_ros.backends.molmo2 import Molmo2Backend, Molmo2Settings, question_for
from glus_ros.backends.molmo2_random import ForceAnswer
from glus_ros.backends.video import BackendPointPredictor, choose_anchors
from glus_ros.points.coords import to_normalised
from glus_ros.points.labels import mask_iou, sam_point_segmenter
from glus_ros.points.propagation import PointPropagator, normalised_anchors
from glus_ros.points.text import format_video_points

from helpers_model import moving_disk_clip
from helpers_molmo2 import hub_state, write_tiny_molmo2, write_tiny_sam2

T, FPS = 6, 4.0   # the clip; shown to the model at most at 2 fps: frames 0, 2, 4, 5 (times 0.0, 0.5, 1.0, 1.25)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Molmo2Backend:
    root = tmp_path_factory.mktemp("molmo2")
    loaded = load_backend(write_tiny_molmo2(root / "tiny"), sam2_checkpoint=write_tiny_sam2(root / "sam2.pt"))
    assert isinstance(loaded, Molmo2Backend)
    return loaded


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return moving_disk_clip(num_frames=T)


@contextlib.contextmanager
def answering(backend: Molmo2Backend, text: str):
    """The backend's model writes ``text`` (greedy decoding forced token by token), then EOS."""
    force = ForceAnswer(backend.inputs.tokenizer, text)
    backend.logits_processor = LogitsProcessorList([force])
    backend.settings.max_new_tokens = len(force.ids)   # the folder's limit is for garbage answers
    try:
        yield
    finally:
        backend.logits_processor = None
        backend.settings.max_new_tokens = None


def disk_centre(t: int) -> tuple[float, float]:
    return 15.0 + 5 * t, 36.0   # helpers_model.moving_disk_clip, 96 x 72


def answer_at(frames: list[tuple[float, list[int]]], label: str = "c") -> str:
    """A Molmo2 answer pointing at the disk of the given frame numbers, at the given times."""
    return format_video_points([(time, [(k + 1, to_normalised([disk_centre(t)], 72, 96)[0]) for k, t in
                                        enumerate(ts)]) for time, ts in frames], label)


def test_the_released_layout_loads_every_tensor_as_written(backend):
    folder = backend.folder.path
    written = {}
    for shard in sorted(folder.glob("model-*.safetensors")):
        written.update(load_file(str(shard)))
    assert set(written) == set(hub_state(backend.model))
    for name, tensor in hub_state(backend.model).items():   # released names -> transformers' modules -> back
        assert torch.equal(tensor, written[name]), name
    vocab = backend.model.config.text_config.vocab_size
    assert written["model.transformer.wte.embedding"].shape[0] == vocab   # base vocabulary | added rows
    assert written["model.transformer.wte.new_embedding"].shape[0] == 16
    assert backend.model.config.vision_config.num_hidden_layers == 3      # the layers vit_layers [-3, -4] read
    assert backend.inputs.mode == ("transformers" if backend.inputs.processor is not None else "own")
    assert backend.folder.layout.use_frame_special_tokens is False


def test_requests_are_asked_as_the_model_cards_show():
    settings = Molmo2Settings()
    assert question_for("the red circle", settings) == "Point to the red circle."
    assert question_for("the mug the person put down.", settings) == "Point to the mug the person put down."
    assert question_for("how many circles are there", settings) == "How many circles are there?"
    assert question_for("How many red cups?", settings) == "How many red cups?"
    assert question_for("the player who is dunking", Molmo2Settings(request="track")) == \
        "Track the player who is dunking."


def test_reserved_tokens_and_bad_windows_are_refused(backend, clip):
    with pytest.raises(ValueError, match="reserved token"):
        backend.ground(clip[:2], ["the <|video|> circle"])
    with pytest.raises(ValueError, match="empty expression"):
        backend.ground(clip[:2], [""])
    with pytest.raises(ValueError, match="timestamp"):
        backend.ground(clip[:2], ["x"], timestamps=[1.0, 0.5])
    with pytest.raises(ValueError, match="no frames"):
        backend.ground([], ["x"])


def test_the_random_models_garbage_never_crashes(backend, clip):
    results = backend.ground(clip[:3], ["the red circle", "how many circles are there"], timestamps=[0, 0.5, 1.0])
    assert len(results) == 2 and len(backend.last_answers) == 2
    for result, answer in zip(results, backend.last_answers, strict=True):
        assert isinstance(answer.text, str) and result.text == answer.text
        # whatever it wrote: its readable points (if any) lie on shown frames and in the frame
        for t, grounding in result.frames.items():
            assert 0 <= t < 3 and all(0.0 <= c <= 1.0 for p in grounding.points for c in p)
        assert result.count == len({p.object_id for p in answer.points
                                    if f"{p.time:.1f}" in ("0.0", "0.5", "1.0")})


def test_a_known_answer_becomes_points_on_the_frames_shown(backend, clip):
    text = 'Sure. <points coords="0.5 1 250 500 2 750 250;1.0 1 260 510;0.7 3 100 100" alt="c">c</points>'
    with answering(backend, text):
        [got] = backend.ground(clip[:3], ["the red circle"], timestamps=[0.0, 0.5, 1.0])
    assert backend.last_answers[0].text == text and backend.last_answers[0].finished
    assert got.points_by_frame() == {1: [(0.25, 0.5), (0.75, 0.25)], 2: [(0.26, 0.51)]}   # 0.7 s: never shown
    assert got.count == 2 and not got.malformed


def test_counting_answer_counts_distinct_objects(backend, clip):
    text = ('Counting the <points coords="0.0 1 100 100 2 900 900;0.5 1 120 110 3 500 500" alt="circles">circles'
            '</points> shows a total of 3.')
    with answering(backend, text):
        [got] = backend.ground(clip[:2], ["how many circles are there"], timestamps=[0.0, 0.5])
    assert got.count == 3 and len(got.points_by_frame()[1]) == 2


def test_malformed_answer_gives_no_points_and_is_flagged(backend, clip):
    with answering(backend, '<points coords="0.5 1 250 5'):   # cut off mid-number, then EOS
        [got] = backend.ground(clip[:2], ["the red circle"], timestamps=[0.0, 0.5])
    assert got.frames == {} and got.count == 0 and got.malformed
    with answering(backend, "There are none."):
        [none] = backend.ground(clip[:2], ["the red circle"], timestamps=[0.0, 0.5])
    assert none.frames == {} and not none.malformed


def test_points_become_masks_propagated_both_ways(backend, clip):
    predictor = BackendPointPredictor(backend, fps=FPS)
    assert backend.sample_video(T, FPS) == [0, 2, 4, 5]
    with answering(backend, answer_at([(0.5, [2])])):
        result, points = predictor.segment(clip, "the red circle", anchors="key")
    assert result.anchors == [2] and [bool(p) for p in points.points] == [t == 2 for t in range(T)]
    assert all(result.sources[t] == (("backward", 2),) for t in range(2))
    assert result.sources[2] == (("anchor", 2),)
    assert all(result.sources[t] == (("forward", 2),) for t in range(3, T))
    # exactly what the backend-agnostic propagation makes of that point, on Molmo2's SAM 2 tracker
    anchor = normalised_anchors({2: points.points[2]}, 72, 96)
    expected = PointPropagator(backend.tracker).segment(clip, anchor)
    assert np.array_equal(result.masks, expected.masks) and np.allclose(result.scores, expected.scores)
    # the anchor's mask is SAM 2's mask for that point prompt (a point thousandths-rounded off the disk centre)
    assert abs(anchor[2][0][0] - disk_centre(2)[0]) < 0.1 and abs(anchor[2][0][1] - disk_centre(2)[1]) < 0.1
    single = sam_point_segmenter(backend.tracker, clip[2])(anchor[2][0])
    assert mask_iou(result.masks[2], single) > 0.98


def test_several_pointed_frames_fuse_forward_and_backward_passes(backend, clip):
    predictor = BackendPointPredictor(backend, fps=FPS)
    with answering(backend, answer_at([(0.0, [0]), (1.25, [5])])):
        result, _ = predictor.segment(clip, "the red circle", anchors="all")
    assert result.anchors == [0, 5]
    assert all(result.sources[t] == (("forward", 0), ("backward", 5)) for t in range(1, 5))


def test_an_answer_pointing_nowhere_loses_the_target_on_every_frame(backend, clip):
    predictor = BackendPointPredictor(backend, fps=FPS)
    with answering(backend, '<points coords="0.3 1 500 500">x</points>'):   # a time it was not shown
        result, points = predictor.segment(clip, "the red circle")
    assert result.anchors == [] and not result.masks.any() and not result.scores.any()
    assert all(p == [] for p in points.points)


def test_anchor_choice():
    points = [[], [(0.1, 0.1)], [], [(0.2, 0.2), (0.3, 0.3)], [(0.5, 0.5)], [], [(0.4, 0.4), (0.6, 0.6)]]
    assert choose_anchors(points, "key") == [3]          # the most points, the earliest of equals
    assert choose_anchors(points, "all") == [1, 3, 4, 6]
    assert choose_anchors(points, 2) == [1, 3, 6]
    assert choose_anchors([[], []], "key") == []
    for bad in (0, "every", True, 1.5):
        with pytest.raises(ValueError, match="anchors must be"):
            choose_anchors(points, bad)


def test_a_prompts_backend_is_not_a_point_predictor():
    from glus_ros.backends.glus import GLUSBackend

    from helpers_model import tiny_model

    with pytest.raises(ValueError, match="not points"):
        BackendPointPredictor(GLUSBackend(tiny_model()))


def test_settings_errors():
    with pytest.raises(ValueError, match="expression"):
        Molmo2Settings.from_dict({"point_prompt": "Point."}, "x.yaml")
    with pytest.raises(ValueError, match=">= 1"):
        Molmo2Settings.from_dict({"max_new_tokens": 0}, "x.yaml")
    with pytest.raises(ValueError, match="dtype"):
        Molmo2Settings.from_dict({"dtype": "fp16"}, "x.yaml")
    assert Path(Molmo2Settings.from_dict({"folder": "/m"}, "x.yaml").folder or "") == Path("/m")


def test_pointing_metrics_score_molmo2s_points(backend, tmp_path):
    from glus_ros.datasets.mevis import MevisDataset
    from glus_ros.points.evaluation import evaluate_points

    from helpers_datasets import write_mevis

    height, width = 40, 60
    box = {c0: np.zeros((height, width), dtype=bool) for c0 in (5, 35)}
    for c0, mask in box.items():
        mask[10:30, c0:c0 + 20] = True
    write_mevis(tmp_path, "valid_u", {"v1": [f"{i:05d}" for i in range(4)]}, {"v1": (height, width)},
                {"v1": {"0": {"exp": "how many squares are there", "obj_id": [0, 1], "anno_id": ["a0", "a1"]}}},
                {"a0": [box[5]] * 4, "a1": [box[35]] * 3 + [None]})
    predictor = BackendPointPredictor(backend, fps=10.0)   # 4 frames at 10 fps: shown 0 and 3
    answer = ('Counting the <points coords="0.0 1 250 500 2 750 500" alt="squares">squares</points> shows a total '
              'of 2.')
    with answering(backend, answer):
        result = evaluate_points(None, MevisDataset(tmp_path, "valid_u"), predictor=predictor)
    # frame 0: both boxes hit, count 2 right; frames 1-3: no points but boxes visible
    assert result.point_accuracy == pytest.approx(0.25) and result.count_accuracy == pytest.approx(0.25)
    assert result.counting_accuracy == pytest.approx(0.25)
    assert 0.0 <= result.j_and_f <= 1.0
    with pytest.raises(ValueError, match="model or a predictor"):
        evaluate_points(None, MevisDataset(tmp_path, "valid_u"))


def test_unreadable_answers_are_logged_at_most_every_few_seconds(backend, clip, caplog):
    """A stream re-grounds many times a second: a model that keeps answering garbage must not flood the log."""
    backend._unreadable_logged = float("-inf")
    with caplog.at_level("WARNING", logger="glus_ros.backends.molmo2"), answering(backend, '<points coords="0.5 1 2'):
        for _ in range(3):
            [got] = backend.ground(clip[:2], ["the red circle"], timestamps=[0.0, 0.5])
            assert got.malformed
    unreadable = [r for r in caplog.records if "no readable points" in r.getMessage()]
    assert len(unreadable) == 1 and "unreadable answers so far" in unreadable[0].getMessage()
