"""Pointing scores on a MeViS-layout dataset: per-object ground truth, point and counting accuracy, J&F."""

import numpy as np
import pytest
import torch

from glus_ros.datasets.mevis import MevisDataset
from glus_ros.inference import load_model
from glus_ros.points.evaluation import evaluate_points, is_counting_expression, object_masks

from helpers_datasets import write_mevis

H, W, T = 40, 60, 4


def _box(c0: int, c1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[10:30, c0:c1] = True
    return mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mevis")
    frames = {"v1": [f"{i:05d}" for i in range(T)]}
    expressions = {"v1": {
        "0": {"exp": "how many squares are there", "obj_id": [0, 1], "anno_id": ["a0", "a1"]},
        "1": {"exp": "the left square", "obj_id": [0], "anno_id": ["a0"]},
    }}
    masks = {"a0": [_box(5, 25)] * T, "a1": [_box(35, 55)] * (T - 1) + [None]}   # a1 leaves in the last frame
    write_mevis(root, "valid_u", frames, {"v1": (H, W)}, expressions, masks)
    return MevisDataset(root, "valid_u")


def _pointing_model(slots):
    model = load_model("tiny", overrides={"points": {"max_points": 3}})
    last = model.point_head.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.view(3, 3)[:, 2] = -8.0
        for k, (x, y) in enumerate(slots):
            last.bias.view(3, 3)[k] = torch.tensor([np.log(x / (1 - x)), np.log(y / (1 - y)), 8.0])
    return model


def test_objects_are_separated_by_annotation(dataset):
    both, left = dataset.expressions()
    objects = object_masks(dataset, both)
    assert objects.shape == (2, T, H, W)
    assert np.array_equal(objects[0, 0], _box(5, 25)) and np.array_equal(objects[1, 0], _box(35, 55))
    assert not objects[1, T - 1].any()
    assert object_masks(dataset, left).shape == (1, T, H, W)
    components = object_masks(dataset, both, split="components")
    assert components.shape == (2, T, H, W) and np.array_equal(components.any(axis=0), objects.any(axis=0))
    with pytest.raises(ValueError, match="split"):
        object_masks(dataset, both, split="pixels")


def test_point_and_count_scores(dataset):
    model = _pointing_model([(0.25, 0.5), (0.75, 0.5)])   # always points at both squares
    result = evaluate_points(model, dataset)
    both, left = result.expressions
    # "how many": 2 points = 2 objects on frames 0-2; the last frame has one object left (accuracy 1/2)
    assert both.point_accuracy == pytest.approx((3 + 0.5) / 4)
    assert both.count_accuracy == pytest.approx(3 / 4)
    # "the left square": one object, two points on every frame
    assert left.point_accuracy == pytest.approx(0.5) and left.count_accuracy == 0.0
    assert result.point_accuracy == pytest.approx((3 + 0.5 + 4 * 0.5) / 8)
    assert result.count_accuracy == pytest.approx(3 / 8)
    assert result.counting_accuracy == pytest.approx(3 / 4)
    assert 0.0 <= result.j <= 1.0 and 0.0 <= result.f <= 1.0 and result.j_and_f == (result.j + result.f) / 2
    only_left = evaluate_points(_pointing_model([(0.25, 0.5)]), dataset, expressions=[dataset.expressions()[1]])
    assert only_left.point_accuracy == 1.0 and only_left.count_accuracy == 1.0
    assert only_left.counting_accuracy is None


def test_counting_expressions_and_errors(dataset):
    assert is_counting_expression("How many cars are parked?") and not is_counting_expression("the many cars")
    with pytest.raises(ValueError, match="no point head"):
        evaluate_points(load_model("tiny"), dataset, source="head")
    with pytest.raises(ValueError, match="no expressions"):
        evaluate_points(_pointing_model([]), dataset, expressions=[])
