"""Points -> video masks: SAM 2 point prompts on anchors, forward + backward memory passes, their fusion."""

import numpy as np
import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.points.labels import mask_iou, sam_point_segmenter
from glus_ros.points.predictor import PointPredictor, anchor_frames
from glus_ros.points.propagation import PassOutput, PointPropagator, fuse_passes, normalised_anchors

from helpers_model import tiny_model

T, H, W = 11, 72, 96
LATE = 5   # the object enters the clip at this frame
A, B = 5, 8   # the anchors: points on two late frames


def late_object_clip() -> list[np.ndarray]:
    """Noise only, then from frame LATE a red disk moving right: the object is visible only late."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:H, :W]
    frames = []
    for t in range(T):
        frame = (rng.random((H, W, 3)) * 60).astype(np.uint8)
        if t >= LATE:
            frame[(xx - centre(t)[0]) ** 2 + (yy - centre(t)[1]) ** 2 <= 100] = (230, 30, 30)
        frames.append(frame)
    return frames


def centre(t: int) -> tuple[float, float]:
    return 20.0 + 5 * (t - LATE), 36.0


@pytest.fixture(scope="module")
def clip():
    return late_object_clip()


@pytest.fixture(scope="module")
def both(clip):
    return PointPropagator(tiny_model()).segment(clip, {A: [centre(A)], B: [centre(B)]})


def test_fuse_passes_weights_by_inverse_distance():
    fwd = PassOutput(np.full((2, 2), 0.8, dtype=np.float32), 0.9, 1)
    bwd = PassOutput(np.array([[0.2, 0.2], [0.2, 1.0]], dtype=np.float32), 0.3, 3)
    prob, visible = fuse_passes(fwd, bwd)
    assert np.allclose(prob, [[0.65, 0.65], [0.65, 0.85]])   # (0.8 * 1 + p / 3) / (1 + 1 / 3)
    assert visible == pytest.approx(0.75)
    # equally far anchors count equally; one pass alone is passed through
    prob, visible = fuse_passes(PassOutput(fwd.prob, 0.9, 2), PassOutput(bwd.prob, 0.3, 2))
    assert np.allclose(prob, (fwd.prob + bwd.prob) / 2) and visible == pytest.approx(0.6)
    prob, visible = fuse_passes(None, bwd)
    assert np.array_equal(prob, bwd.prob) and visible == pytest.approx(0.3)


def test_fuse_passes_errors():
    with pytest.raises(ValueError, match="at least one pass"):
        fuse_passes(None, None)
    with pytest.raises(ValueError, match="distance"):
        fuse_passes(PassOutput(np.zeros((2, 2)), 0.5, 0), None)
    with pytest.raises(ValueError, match="shape"):
        fuse_passes(PassOutput(np.zeros((2, 2)), 0.5, 1), PassOutput(np.zeros((3, 2)), 0.5, 1))


def test_late_object_early_frames_come_from_the_backward_pass(both):
    assert both.masks.shape == (T, H, W) and both.masks.dtype == bool
    assert both.scores.shape == (T,) and np.all((both.scores >= 0) & (both.scores <= 1))
    assert both.anchors == [A, B]
    for t in range(LATE):
        assert both.sources[t] == (("backward", A),)
    assert both.sources[A] == (("anchor", A),) and both.sources[B] == (("anchor", B),)
    for t in range(A + 1, B):
        assert both.sources[t] == (("forward", A), ("backward", B))
    for t in range(B + 1, T):
        assert both.sources[t] == (("forward", B),)
    assert both.scores[A] == both.scores[B] == 1.0


def test_fusion_on_the_real_model_uses_both_passes_by_distance(clip, both):
    propagator = PointPropagator(tiny_model())
    # each pass alone, on the sub-clip it covers: the same frames in the same order from the same anchor
    forward = propagator.segment(clip[A:B], {0: [centre(A)]})                  # frames A+1 .. B-1, forward
    backward = propagator.segment(clip[A + 1:B + 1], {B - A - 1: [centre(B)]})  # frames B-1 .. A+1, backward
    assert forward.sources[1] == (("forward", 0),) and backward.sources[0] == (("backward", B - A - 1),)
    for t in range(A + 1, B):
        wf, wb = 1 / (t - A), 1 / (B - t)
        expected = (wf * forward.scores[t - A] + wb * backward.scores[t - A - 1]) / (wf + wb)
        assert both.scores[t] == pytest.approx(expected, abs=1e-5)
    # an anchor's mask comes from its own points, whatever the other anchors are
    assert np.array_equal(both.masks[A], forward.masks[0]) and np.array_equal(both.masks[B], backward.masks[-1])


def test_anchor_mask_is_the_point_prompted_sam_mask(clip, both):
    expected = sam_point_segmenter(tiny_model(), clip[A])(centre(A))
    assert mask_iou(both.masks[A], expected) > 0.98   # same decoder, prompt and resizing (up to float error)
    moved = PointPropagator(tiny_model()).segment(clip[A:A + 1], {0: [(80.0, 10.0)]})
    assert not np.array_equal(moved.masks[0], both.masks[A])


def test_anchor_without_points_means_absent_and_stops_passes(clip):
    result = PointPropagator(tiny_model()).segment(clip[: A + 1], {2: [], A: [centre(A)]})
    assert result.sources[2] == (("absent", 2),) and not result.masks[2].any() and result.scores[2] == 0
    assert all(result.sources[t] == () and not result.masks[t].any() and result.scores[t] == 0 for t in range(2))
    assert all(result.sources[t] == (("backward", A),) for t in range(3, A))


def test_multi_point_anchor_is_the_union_of_single_point_masks(clip):
    propagator = PointPropagator(tiny_model())
    points = [centre(B), (85.0, 60.0)]
    union = propagator.segment(clip[B:B + 1], {0: points}).masks[0]
    singles = [propagator.segment(clip[B:B + 1], {0: [p]}).masks[0] for p in points]
    assert mask_iou(union, singles[0] | singles[1]) > 0.98


def test_bad_anchors_are_clear_errors(clip):
    propagator = PointPropagator(tiny_model())
    with pytest.raises(ValueError, match="not a frame index"):
        propagator.segment(clip, {T: [(1.0, 1.0)]})
    with pytest.raises(ValueError, match="not on the"):
        propagator.segment(clip, {0: [(W + 3.0, 1.0)]})
    with pytest.raises(ValueError, match="at least one anchor"):
        propagator.segment(clip, {})
    with pytest.raises(ValueError, match="no frames"):
        propagator.segment([], {0: []})
    with pytest.raises(ValueError, match="memory"):
        PointPropagator(load_model("tiny", overrides={"memory": {"enabled": False}})).segment(clip, {0: [(1.0, 1.0)]})


def test_normalised_anchors_convert_and_clamp():
    anchors = normalised_anchors({0: [(0.5, 0.5), (1.0, 0.0), (float("nan"), 0.2)], 4: []}, H, W)
    assert anchors[0] == [(47.5, 35.5), (W - 0.5, -0.5)] and anchors[4] == []


def _pointing_model(slots: list[tuple[float, float]]):
    """The tiny model with a point head that always points at ``slots`` (weights set by hand)."""
    model = load_model("tiny", overrides={"points": {"max_points": 4}})
    last = model.point_head.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        bias = last.bias.view(4, 3)
        bias[:, 2] = -6.0
        for k, (x, y) in enumerate(slots):
            bias[k] = torch.tensor([np.log(x / (1 - x)), np.log(y / (1 - y)), 6.0 + k])
    return model


def test_predictor_points_and_point_prompted_segmentation(clip):
    model = _pointing_model([(0.25, 0.5), (0.75, 0.25)])
    predictor = PointPredictor(model)
    result, points = predictor.segment(clip[:7], "the red circle", anchors=3)
    assert points.counts == [2] * 7 and np.all(points.confidence > 0.99)
    assert np.allclose(points.points[0], [(0.75, 0.25), (0.25, 0.5)], atol=1e-5)   # surest slot first
    assert result.anchors == [0, 3, 6] and result.sources[4] == (("forward", 3), ("backward", 6))
    assert result.masks.shape == (7, H, W)
    with pytest.raises(ValueError, match="no point head"):
        PointPredictor(tiny_model(), source="head")
    with pytest.raises(ValueError, match="point source must be one of"):
        PointPredictor(model, source="text")


def test_anchor_frame_choice():
    confidence = np.array([0.1, 0.7, 0.3, 0.9, 0.2])
    assert anchor_frames(confidence, "key") == [3]
    assert anchor_frames(confidence, 2) == [0, 2, 4]
    for bad in (0, "every", True, 1.5):
        with pytest.raises(ValueError, match="anchors must be"):
            anchor_frames(confidence, bad)
