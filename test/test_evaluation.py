"""Dataset readers, prediction scoring and ``glus-ros eval`` on tiny hand-made datasets.

Expected scores (10x10 frames have a 1 px boundary tolerance; 8x12 too: ceil(0.008 * 14.4) = 1):
  * STEP vs LEFT: J = 50/65 = 10/13, F = 12/23 (derived in test_metrics.py).
  * identical non-empty masks: J = F = 1; both empty: J = F = 1 (empty union / both boundaries empty).
  * prediction empty, ground truth non-empty (and not full): J = 0, F = 0.
  * full ground truth (empty boundary map) vs full prediction: J = F = 1.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glus_ros.cli import main
from glus_ros.datasets.mevis import Expression, MevisDataset
from glus_ros.datasets.refytvos import RefYoutubeVosDataset
from glus_ros.evaluation import evaluate_predictions, read_prediction, write_csv
from glus_ros.model.config import DEFAULT_MODEL

from helpers_datasets import (
    write_mevis,
    write_palette_png,
    write_predictions,
    write_refytvos,
)

S = (10, 10)


def rect(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


EMPTY = np.zeros(S, dtype=bool)
FULL = np.ones(S, dtype=bool)
LEFT = rect(S, slice(None), slice(0, 5))
RIGHT = rect(S, slice(None), slice(5, 10))
TOP = rect(S, slice(0, 5), slice(None))
DOT = rect(S, slice(2, 3), slice(2, 3))
STEP = LEFT | rect(S, slice(5, 10), slice(0, 8))
BOX = rect((8, 12), slice(2, 6), slice(3, 9))

# MeViS fixture: v1 (2 frames, 10x10) and v2 (1 frame, 8x12).
# anno 0 = LEFT then absent; anno 1 = RIGHT then TOP; anno 2 = BOX.
# Expression v1/0 (anno 0): gt [LEFT, empty], pred [STEP, empty] -> J (10/13 + 1)/2 = 23/26,
#                                                                   F (12/23 + 1)/2 = 35/46.
# Expression v1/1 (annos 0, 1): gt [LEFT|RIGHT = full, TOP], pred [full, empty] -> J (1 + 0)/2,
#                                                                               F (1 + 0)/2.
# Expression v2/0 (anno 2): gt [BOX], pred [BOX] -> J 1, F 1.
# Means over expressions: J = (23/26 + 1/2 + 1)/3 = 31/39, F = (35/46 + 1/2 + 1)/3 = 52/69.
MEVIS_J = 31 / 39
MEVIS_F = 52 / 69
MEVIS_FRAMES = {"v1": ["00000", "00001"], "v2": ["00000"]}
MEVIS_SIZES = {"v1": S, "v2": (8, 12)}
MEVIS_EXPRESSIONS = {
    "v1": {
        "0": {"exp": "the left thing", "obj_id": [1], "anno_id": [0]},
        "1": {"exp": "both things", "obj_id": [1, 2], "anno_id": [0, 1]},
    },
    "v2": {"0": {"exp": "the box", "obj_id": [3], "anno_id": [2]}},
}
MEVIS_MASKS = {"0": [LEFT, None], "1": [RIGHT, TOP], "2": [BOX]}

# Ref-YouTube-VOS fixture: r1 (2 frames). Labels: frame 0 LEFT = 1, RIGHT = 2; frame 1 TOP = 1, rest 0.
# Expression 0 (obj 1): gt [LEFT, TOP], pred [STEP, TOP] -> J 23/26, F 35/46.
# Expression 1 (obj 2): gt [RIGHT, empty], pred [RIGHT, DOT] -> J (1 + 0)/2, F (1 + 0)/2
#   (DOT vs empty: union 1, intersection 0; only the prediction has a boundary).
# Means: J = (23/26 + 1/2)/2 = 9/13, F = (35/46 + 1/2)/2 = 29/46.
YT_J = 9 / 13
YT_F = 29 / 46
YT_FRAMES = {"r1": ["00000", "00005"]}
YT_EXPRESSIONS = {
    "r1": {"0": {"exp": "the red one", "obj_id": "1"}, "1": {"exp": "the green one", "obj_id": "2"}}
}
YT_LABELS = {"r1": [LEFT * 1 + RIGHT * 2, TOP * 1]}


@pytest.fixture
def mevis(tmp_path: Path) -> tuple[Path, Path]:
    """(dataset root, prediction dir) for the MeViS fixture, split valid_u."""
    root = tmp_path / "mevis"
    write_mevis(root, "valid_u", MEVIS_FRAMES, MEVIS_SIZES, MEVIS_EXPRESSIONS, MEVIS_MASKS)
    pred = tmp_path / "pred"
    write_predictions(pred, "v1", "0", MEVIS_FRAMES["v1"], [STEP, EMPTY])
    write_predictions(pred, "v1", "1", MEVIS_FRAMES["v1"], [FULL, EMPTY])
    write_predictions(pred, "v2", "0", MEVIS_FRAMES["v2"], [BOX])
    return root, pred


@pytest.fixture
def refytvos(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "ytvos"
    write_refytvos(root, "valid", YT_FRAMES, {"r1": S}, YT_EXPRESSIONS, YT_LABELS)
    pred = tmp_path / "pred_yt"
    write_predictions(pred, "r1", "0", YT_FRAMES["r1"], [STEP, TOP])
    write_predictions(pred, "r1", "1", YT_FRAMES["r1"], [RIGHT, DOT])
    return root, pred


# ---------------------------------------------------------------- MeViS reader


def test_mevis_reader_lists_videos_frames_expressions(mevis):
    ds = MevisDataset(mevis[0], "valid_u")
    assert ds.videos() == ["v1", "v2"]
    assert ds.frames("v1") == ["00000", "00001"]
    assert ds.frame_path("v2", "00000") == mevis[0] / "valid_u" / "JPEGImages" / "v2" / "00000.jpg"
    assert ds.expressions() == [
        Expression("v1", "0", "the left thing", (1,), ("0",)),
        Expression("v1", "1", "both things", (1, 2), ("0", "1")),
        Expression("v2", "0", "the box", (3,), ("2",)),
    ]
    frame = ds.load_frame("v2", "00000")
    assert frame.shape == (8, 12, 3) and frame.dtype == np.uint8
    assert np.abs(frame.astype(int) - [200, 40, 40]).max() <= 8  # flat colour after JPEG
    assert ds.frame_size("v2") == (8, 12)


def test_mevis_gt_is_union_of_annotations(mevis):
    ds = MevisDataset(mevis[0], "valid_u")
    exps = ds.expressions()
    gt0 = ds.gt_masks(exps[0])
    assert gt0.shape == (2, 10, 10) and gt0.dtype == bool
    np.testing.assert_array_equal(gt0, np.stack([LEFT, EMPTY]))  # null RLE = absent
    np.testing.assert_array_equal(ds.gt_masks(exps[1]), np.stack([FULL, TOP]))
    np.testing.assert_array_equal(ds.gt_masks(exps[2]), BOX[None])


def test_mevis_unknown_video(mevis):
    with pytest.raises(ValueError, match=r"'nope'.*meta_expressions.json"):
        MevisDataset(mevis[0], "valid_u").frames("nope")


def test_mevis_missing_split_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"valid_u"):
        MevisDataset(tmp_path, "valid_u")


def test_mevis_missing_meta(tmp_path):
    (tmp_path / "valid_u").mkdir()
    with pytest.raises(FileNotFoundError, match=r"meta_expressions\.json"):
        MevisDataset(tmp_path, "valid_u")


def test_mevis_corrupt_meta(mevis):
    meta = mevis[0] / "valid_u" / "meta_expressions.json"
    meta.write_text('{"videos": {')
    with pytest.raises(ValueError, match=r"corrupt JSON file .*meta_expressions.json"):
        MevisDataset(mevis[0], "valid_u")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"vids": {}}, "'videos'"),
        ({"videos": {"v1": {"expressions": {}}}}, "'v1'.*'frames'"),
        ({"videos": {"v1": {"frames": ["0"], "expressions": {"0": {"obj_id": [1]}}}}}, "'0'.*'exp'"),
        (
            {"videos": {"v1": {"frames": ["0"], "expressions": {"0": {"exp": "x", "obj_id": ["a"]}}}}},
            "obj_id",
        ),
    ],
)
def test_mevis_malformed_meta(mevis, meta, message):
    (mevis[0] / "valid_u" / "meta_expressions.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        MevisDataset(mevis[0], "valid_u")


def test_mevis_missing_image(mevis):
    (mevis[0] / "valid_u" / "JPEGImages" / "v2" / "00000.jpg").unlink()
    ds = MevisDataset(mevis[0], "valid_u")
    with pytest.raises(FileNotFoundError, match=r"v2[/\\]00000.jpg"):
        ds.load_frame("v2", "00000")
    with pytest.raises(FileNotFoundError, match=r"v2[/\\]00000.jpg"):
        ds.gt_masks(ds.expressions()[2])


def test_mevis_corrupt_image(mevis):
    path = mevis[0] / "valid_u" / "JPEGImages" / "v1" / "00001.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"unreadable image .*v1[/\\]00001.jpg"):
        MevisDataset(mevis[0], "valid_u").load_frame("v1", "00001")


def test_mevis_without_mask_dict(tmp_path):
    root = tmp_path / "m"
    write_mevis(root, "valid", MEVIS_FRAMES, MEVIS_SIZES, MEVIS_EXPRESSIONS, masks=None)
    ds = MevisDataset(root, "valid")
    assert not ds.has_ground_truth()
    with pytest.raises(FileNotFoundError, match=r"mask_dict.json"):
        ds.gt_masks(ds.expressions()[0])


def test_mevis_corrupt_mask_dict(mevis):
    (mevis[0] / "valid_u" / "mask_dict.json").write_text("[1, 2")
    ds = MevisDataset(mevis[0], "valid_u")
    with pytest.raises(ValueError, match=r"mask_dict.json"):
        ds.gt_masks(ds.expressions()[0])


def test_mevis_mask_list_length_mismatch(mevis):
    path = mevis[0] / "valid_u" / "mask_dict.json"
    masks = json.loads(path.read_text())
    masks["0"] = masks["0"][:1]  # one mask for a two-frame video
    path.write_text(json.dumps(masks))
    ds = MevisDataset(mevis[0], "valid_u")
    with pytest.raises(ValueError, match=r"anno_id '0' has 1 masks.*2 frames"):
        ds.gt_masks(ds.expressions()[0])


def test_mevis_anno_id_missing_from_mask_dict(mevis):
    path = mevis[0] / "valid_u" / "mask_dict.json"
    masks = json.loads(path.read_text())
    del masks["1"]
    path.write_text(json.dumps(masks))
    ds = MevisDataset(mevis[0], "valid_u")
    with pytest.raises(ValueError, match=r"anno_id '1'.*not in .*mask_dict\.json"):
        ds.gt_masks(ds.expressions()[1])


def test_mevis_expression_without_anno_id(tmp_path):
    root = tmp_path / "m"
    exps = {"v2": {"0": {"exp": "the box", "obj_id": [3]}}}
    write_mevis(root, "valid_u", {"v2": ["00000"]}, MEVIS_SIZES, exps, {"2": [BOX]})
    ds = MevisDataset(root, "valid_u")
    with pytest.raises(ValueError, match=r"no anno_id"):
        ds.gt_masks(ds.expressions()[0])


# ---------------------------------------------------------------- Ref-YouTube-VOS reader


def test_refytvos_reader(refytvos):
    ds = RefYoutubeVosDataset(refytvos[0], "valid")
    assert ds.videos() == ["r1"]
    assert ds.frames("r1") == ["00000", "00005"]
    exps = ds.expressions()
    assert exps == [
        Expression("r1", "0", "the red one", (1,), None),
        Expression("r1", "1", "the green one", (2,), None),
    ]
    np.testing.assert_array_equal(ds.gt_masks(exps[0]), np.stack([LEFT, TOP]))
    np.testing.assert_array_equal(ds.gt_masks(exps[1]), np.stack([RIGHT, EMPTY]))
    assert ds.load_frame("r1", "00005").shape == (10, 10, 3)
    # an expression may name several objects: union of their indices
    both = Expression("r1", "x", "both", (1, 2), None)
    np.testing.assert_array_equal(ds.gt_masks(both), np.stack([FULL, TOP]))


def test_refytvos_missing_meta(tmp_path):
    (tmp_path / "valid").mkdir()
    with pytest.raises(FileNotFoundError, match=r"meta_expressions[/\\]valid[/\\]meta_expressions.json"):
        RefYoutubeVosDataset(tmp_path, "valid")


def test_refytvos_missing_annotation(refytvos):
    (refytvos[0] / "valid" / "Annotations" / "r1" / "00005.png").unlink()
    ds = RefYoutubeVosDataset(refytvos[0], "valid")
    with pytest.raises(FileNotFoundError, match=r"Annotations[/\\]r1[/\\]00005.png"):
        ds.gt_masks(ds.expressions()[0])


def test_refytvos_rgb_annotation_is_rejected(refytvos):
    path = refytvos[0] / "valid" / "Annotations" / "r1" / "00000.png"
    Image.new("RGB", (10, 10)).save(path)
    ds = RefYoutubeVosDataset(refytvos[0], "valid")
    with pytest.raises(ValueError, match=r"00000.png has mode RGB"):
        ds.gt_masks(ds.expressions()[0])


def test_refytvos_annotation_size_mismatch(refytvos):
    write_palette_png(refytvos[0] / "valid" / "Annotations" / "r1" / "00000.png", np.zeros((6, 10)))
    ds = RefYoutubeVosDataset(refytvos[0], "valid")
    with pytest.raises(ValueError, match=r"00000.png is 6x10.*10x10"):
        ds.gt_masks(ds.expressions()[0])


# ---------------------------------------------------------------- scoring


def test_evaluate_mevis_per_expression_and_aggregate(mevis):
    result = evaluate_predictions(mevis[1], MevisDataset(mevis[0], "valid_u"))
    rows = {(r.video, r.exp_id): r for r in result.rows}
    assert rows["v1", "0"].j == pytest.approx(23 / 26)
    assert rows["v1", "0"].f == pytest.approx(35 / 46)
    assert rows["v1", "0"].j_and_f == pytest.approx((23 / 26 + 35 / 46) / 2)
    assert (rows["v1", "1"].j, rows["v1", "1"].f) == pytest.approx((0.5, 0.5))
    assert (rows["v2", "0"].j, rows["v2", "0"].f) == pytest.approx((1.0, 1.0))
    assert [r.frames for r in result.rows] == [2, 2, 1]
    assert rows["v1", "1"].expression == "both things"
    # mean over expressions, not over frames (frame-weighted J would be (2*23/26 + 2*0.5 + 1)/5)
    assert result.j == pytest.approx(MEVIS_J)
    assert result.f == pytest.approx(MEVIS_F)
    assert result.j_and_f == pytest.approx((MEVIS_J + MEVIS_F) / 2)
    assert result.num_expressions == 3 and result.missing == 0


def test_evaluate_refytvos(refytvos):
    result = evaluate_predictions(refytvos[1], RefYoutubeVosDataset(refytvos[0], "valid"))
    assert [(r.j, r.f) for r in result.rows] == [
        pytest.approx((23 / 26, 35 / 46)),
        pytest.approx((0.5, 0.5)),
    ]
    assert result.j == pytest.approx(YT_J)
    assert result.f == pytest.approx(YT_F)


def test_missing_prediction_is_an_error(mevis):
    (mevis[1] / "v1" / "1" / "00000.png").unlink()
    ds = MevisDataset(mevis[0], "valid_u")
    with pytest.raises(
        FileNotFoundError, match=r"1 of 5 prediction PNGs are missing.*v1[/\\]1[/\\]00000.png"
    ):
        evaluate_predictions(mevis[1], ds)


def test_many_missing_predictions_name_the_first_few(mevis):
    for path in (mevis[1] / "v1").rglob("*.png"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"4 of 5 .* and 1 more"):
        evaluate_predictions(mevis[1], MevisDataset(mevis[0], "valid_u"))


def test_allow_missing_scores_empty_masks(mevis):
    # v1/1 frame 0 missing -> empty vs full gt: J 0; both boundary maps are empty: F 1.
    # Frame 1 as before (J 0, F 0) -> expression J 0, F 0.5.
    (mevis[1] / "v1" / "1" / "00000.png").unlink()
    result = evaluate_predictions(mevis[1], MevisDataset(mevis[0], "valid_u"), allow_missing=True)
    assert result.missing == 1
    row = result.rows[1]
    assert (row.j, row.f) == pytest.approx((0.0, 0.5))
    assert result.j == pytest.approx((23 / 26 + 0 + 1) / 3)


def test_prediction_of_wrong_size(mevis):
    write_predictions(mevis[1], "v2", "0", ["00000"], [np.zeros((10, 10), dtype=bool)])
    with pytest.raises(ValueError, match=r"v2[/\\]0[/\\]00000.png is 10x10.*8x12"):
        evaluate_predictions(mevis[1], MevisDataset(mevis[0], "valid_u"))


def test_missing_prediction_folder(mevis, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no_such_dir"):
        evaluate_predictions(tmp_path / "no_such_dir", MevisDataset(mevis[0], "valid_u"))


def test_dataset_without_expressions(tmp_path):
    root = tmp_path / "m"
    write_mevis(root, "valid_u", {"v": ["0"]}, {"v": S}, {}, {})
    with pytest.raises(ValueError, match=r"no expressions"):
        evaluate_predictions(tmp_path, MevisDataset(root, "valid_u"))


def test_read_prediction_threshold_and_modes(tmp_path):
    # grayscale: foreground is > 127, so 127 is background and 128 foreground
    gray = np.array([[0, 127], [128, 255]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_prediction(tmp_path / "g.png", (2, 2)), [[0, 0], [1, 1]])
    # palette PNG: indices, nonzero is foreground
    write_palette_png(tmp_path / "p.png", np.array([[0, 1], [2, 0]]))
    np.testing.assert_array_equal(read_prediction(tmp_path / "p.png", (2, 2)), [[0, 1], [1, 0]])
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad.png"):
        read_prediction(tmp_path / "bad.png", (2, 2))


def test_write_csv(mevis, tmp_path):
    result = evaluate_predictions(mevis[1], MevisDataset(mevis[0], "valid_u"))
    path = write_csv(result, tmp_path / "sub" / "scores.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["video", "exp_id", "expression", "J", "F", "J&F", "frames"]
    assert [(r["video"], r["exp_id"], r["frames"]) for r in rows] == [
        ("v1", "0", "2"),
        ("v1", "1", "2"),
        ("v2", "0", "1"),
    ]
    assert float(rows[0]["J"]) == pytest.approx(23 / 26, abs=1e-6)
    assert float(rows[0]["J&F"]) == pytest.approx((23 / 26 + 35 / 46) / 2, abs=1e-6)


# ---------------------------------------------------------------- CLI


def test_cli_eval_prints_scores_and_writes_csv(mevis, capsys):
    root, pred = mevis
    assert main(["eval", "--pred", str(pred), "--data", str(root), "--split", "valid_u"]) == 0
    out = capsys.readouterr().out
    # 31/39 = 0.79487, 52/69 = 0.75362, mean 0.77425
    assert "J: 0.795" in out and "F: 0.754" in out and "J&F: 0.774" in out
    assert "expressions: 3" in out
    with (pred / "eval_valid_u.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_cli_eval_refytvos_custom_csv(refytvos, tmp_path, capsys):
    root, pred = refytvos
    csv_path = tmp_path / "out" / "yt.csv"
    argv = ["eval", "--pred", str(pred), "--data", str(root), "--dataset", "refytvos", "--csv", str(csv_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 9/13 = 0.69231, 29/46 = 0.63043, mean 0.66137
    assert "J: 0.692" in out and "F: 0.630" in out and "J&F: 0.661" in out and "expressions: 2" in out
    assert csv_path.is_file()


def test_cli_eval_error_is_one_line(mevis, capsys):
    root, pred = mevis
    (pred / "v2" / "0" / "00000.png").unlink()
    assert main(["eval", "--pred", str(pred), "--data", str(root), "--split", "valid_u"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glus-ros eval: error: 1 of 5 prediction PNGs are missing")
    assert len(err.splitlines()) == 1


def test_cli_eval_allow_missing(mevis, capsys):
    root, pred = mevis
    (pred / "v2" / "0" / "00000.png").unlink()
    argv = ["eval", "--pred", str(pred), "--data", str(root), "--split", "valid_u", "--allow-missing"]
    assert main(argv) == 0
    assert "missing predictions scored as empty: 1" in capsys.readouterr().out


def test_cli_eval_takes_one_source(mevis):
    root, pred = mevis
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--pred", str(pred), "--model", "glus-s", "--data", str(root)])
    assert exc.value.code == 2


def test_cli_eval_without_model_or_pred_runs_the_shipped_model(mevis, tmp_path, capsys):
    """Like segment and track: no --model means the default model, with exactly its predictions and scores."""
    root, _ = mevis
    implicit, explicit = tmp_path / "implicit", tmp_path / "explicit"
    assert main(["eval", "--data", str(root), "--split", "valid_u", "--out", str(implicit)]) == 0
    assert main(["eval", "--model", DEFAULT_MODEL, "--data", str(root), "--split", "valid_u",
                 "--out", str(explicit)]) == 0
    first, second = capsys.readouterr().out.split("csv:")[:2]
    assert "J&F:" in first and first.split("J&F:")[1].split()[0] == second.split("J&F:")[1].split()[0]
    pngs = sorted(p.relative_to(implicit) for p in implicit.rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(explicit) for p in explicit.rglob("*.png"))
    for name in pngs:
        assert (implicit / name).read_bytes() == (explicit / name).read_bytes(), name
    assert (implicit / "eval_valid_u.csv").read_text() == (explicit / "eval_valid_u.csv").read_text()


def test_cli_eval_model_runs_the_real_model_first(mevis, tmp_path, capsys):
    """--model runs the (random tiny) model on every expression, then scores what it wrote."""
    root, _ = mevis
    out = tmp_path / "pred"
    argv = ["eval", "--model", "tiny", "--data", str(root), "--split", "valid_u", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    dataset = MevisDataset(root, "valid_u")
    for e in dataset.expressions():
        for frame in dataset.frames(e.video):
            assert (out / e.video / str(e.exp_id) / f"{frame}.png").is_file()
    rows = (out / "eval_valid_u.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(dataset.expressions())
    jf = float(text.split("J&F:")[1].split()[0])
    assert 0.0 <= jf <= 1.0


def test_cli_eval_key_frame_without_selector_is_clear(mevis, tmp_path, capsys):
    root, _ = mevis
    argv = ["eval", "--model", "tiny", "--data", str(root), "--split", "valid_u", "--out", str(tmp_path / "p"),
            "--key-frame"]
    assert main(argv) == 2
    assert "key-frame selector" in capsys.readouterr().err


def test_cli_eval_missing_data_folder(tmp_path, capsys):
    assert main(["eval", "--pred", str(tmp_path), "--data", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def test_scoring_from_a_later_frame_scores_only_those_frames(refytvos):
    from glus_ros.evaluation import prediction_path, read_prediction
    from glus_ros.metrics import video_j_f

    ds = RefYoutubeVosDataset(refytvos[0], "valid")
    later = evaluate_predictions(refytvos[1], ds, from_frame=1)
    whole = evaluate_predictions(refytvos[1], ds)
    for row, e in zip(later.rows, ds.expressions(), strict=True):
        gts = ds.gt_masks(e)
        preds = np.stack([read_prediction(prediction_path(refytvos[1], e, f), gts.shape[1:])
                          for f in ds.frames(e.video)])
        assert (row.j, row.f) == pytest.approx(video_j_f(preds[1:], gts[1:])) and row.frames == 1
    assert later.j_and_f != pytest.approx(whole.j_and_f)
    with pytest.raises(ValueError, match="from_frame 2: video r1 has only 2 frames"):
        evaluate_predictions(refytvos[1], ds, from_frame=2)
    with pytest.raises(ValueError, match="from_frame must be >= 0"):
        evaluate_predictions(refytvos[1], ds, from_frame=-1)
