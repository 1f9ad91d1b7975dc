"""The synthetic MeViS-like benchmark: layout, determinism, exact masks, and that it is hard the intended way."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from glus_ros.cli import main
from glus_ros.data import SynthConfig, generate_video, split_seed, write_split, write_video_frames
from glus_ros.data.expressions import Description, NounPhrase, SceneFacts, describe_scene, resolve
from glus_ros.data.motion import displacements, motion_tags
from glus_ros.data.scene import COLOURS, Scene, SceneObject
from glus_ros.data.shapes import SHAPES, shape_extent, shape_mask
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.datasets.rle import decode_rle

SEED = 5
N_SPLIT = 8
N_STATS = 40


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def split_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_a")
    write_split(root, "train", N_SPLIT, SEED)
    return root


@pytest.fixture(scope="module")
def videos() -> list:
    return [generate_video(3, i) for i in range(N_STATS)]


def _steps(obj) -> list:
    return [d for d, start, end in obj.motion for _ in range(end - start)]


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_split(split_root: Path, tmp_path: Path) -> None:
    write_split(tmp_path, "train", N_SPLIT, SEED)
    first, second = _hashes(split_root / "train"), _hashes(tmp_path / "train")
    assert len(first) == N_SPLIT * 16 + 3
    assert first == second


def test_output_does_not_depend_on_python_hash_seed(split_root: Path, tmp_path: Path) -> None:
    """Set iteration order changes with PYTHONHASHSEED; the generator must not depend on it."""
    code = "import sys; from glus_ros.data import write_split; write_split(sys.argv[1], 'train', 3, int(sys.argv[2]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(SEED)], env=env, cwd=repo, check=True, capture_output=True
    )
    first_three = {"synth_00000", "synth_00001", "synth_00002"}
    theirs = {k: v for k, v in _hashes(tmp_path / "train").items() if k.startswith("JPEGImages")}
    ours = _hashes(split_root / "train")
    ours = {k: v for k, v in ours.items() if k.startswith("JPEGImages") and Path(k).parts[1] in first_three}
    assert len(theirs) == 3 * 16
    assert theirs == ours
    other = json.loads((tmp_path / "train" / "synth_meta.json").read_text())["videos"]
    mine = json.loads((split_root / "train" / "synth_meta.json").read_text())["videos"]
    assert [v["expressions"] for v in other.values()] == [mine[name]["expressions"] for name in other]


def test_other_seed_or_split_gives_other_videos(split_root: Path, tmp_path: Path) -> None:
    write_split(tmp_path / "a", "train", 2, SEED + 1)
    write_split(tmp_path / "b", "valid", 2, SEED)
    frame = Path("JPEGImages/synth_00000/00000.jpg")
    original = (split_root / "train" / frame).read_bytes()
    assert (tmp_path / "a" / "train" / frame).read_bytes() != original
    assert (tmp_path / "b" / "valid" / frame).read_bytes() != original
    assert split_seed(SEED, "train") != split_seed(SEED, "valid")


# ---------------------------------------------------------------- layout


def test_layout_and_schema_are_mevis(split_root: Path) -> None:
    split = split_root / "train"
    assert sorted(p.name for p in split.iterdir()) == [
        "JPEGImages", "mask_dict.json", "meta_expressions.json", "synth_meta.json",
    ]
    meta = json.loads((split / "meta_expressions.json").read_text())
    masks = json.loads((split / "mask_dict.json").read_text())
    assert list(meta) == ["videos"]
    assert len(meta["videos"]) == N_SPLIT
    used: list[str] = []
    for video, entry in meta["videos"].items():
        assert set(entry) == {"frames", "expressions"}
        assert entry["frames"] == [f"{t:05d}" for t in range(16)]
        files = sorted(p.name for p in (split / "JPEGImages" / video).iterdir())
        assert files == [f"{f}.jpg" for f in entry["frames"]]
        height, width = cv2.imread(str(split / "JPEGImages" / video / files[0])).shape[:2]
        assert list(entry["expressions"]) == [str(i) for i in range(len(entry["expressions"]))]
        for exp in entry["expressions"].values():
            assert set(exp) == {"exp", "obj_id", "anno_id"}
            assert isinstance(exp["exp"], str) and exp["exp"]
            assert exp["obj_id"] and all(isinstance(o, int) for o in exp["obj_id"])
            assert len(exp["anno_id"]) == len(exp["obj_id"])
            for anno in exp["anno_id"]:
                assert isinstance(anno, str)
                assert len(masks[anno]) == 16
                for rle in masks[anno]:
                    assert rle is None or (set(rle) == {"size", "counts"} and rle["size"] == [height, width])
            used += exp["anno_id"]
    assert set(used) <= set(masks)


def test_one_anno_id_per_object_unique_across_split(split_root: Path) -> None:
    extra = json.loads((split_root / "train" / "synth_meta.json").read_text())
    masks = json.loads((split_root / "train" / "mask_dict.json").read_text())
    annos = [obj["anno_id"] for v in extra["videos"].values() for obj in v["objects"].values()]
    assert len(annos) == len(set(annos)) == len(masks)
    assert set(annos) == set(masks)


def test_synth_meta_holds_the_free_facts(split_root: Path) -> None:
    extra = json.loads((split_root / "train" / "synth_meta.json").read_text())
    meta = json.loads((split_root / "train" / "meta_expressions.json").read_text())
    assert extra["generator"]["seed"] == SEED
    for name, video in extra["videos"].items():
        height, width = video["size"]
        first = cv2.imread(str(split_root / "train" / "JPEGImages" / name / "00000.jpg"))
        assert first.shape[:2] == (height, width)
        assert video["intrinsics"]["cx"] == (width - 1) / 2 and video["intrinsics"]["cy"] == (height - 1) / 2
        assert set(video["intrinsics"]) == {"fx", "fy", "cx", "cy"}
        for obj in video["objects"].values():
            assert obj["colour"] in COLOURS and obj["shape"] in SHAPES
            assert obj["size"] in ("small", "medium", "large") and obj["radius_px"] > 0
            assert 0 < obj["depth_m"] < 3.5
            assert len(obj["centroid"]) == len(obj["visibility"]) == 16
            for point, seen in zip(obj["centroid"], obj["visibility"], strict=True):
                assert (point is None) == (seen == 0)
        assert list(video["expressions"]) == list(meta["videos"][name]["expressions"])
        for exp_id, exp in video["expressions"].items():
            assert exp["exp"] == meta["videos"][name]["expressions"][exp_id]["exp"]
            assert exp["kind"] in ("attribute", "motion", "position", "relation", "multi")
            assert (exp["motion"] is not None) == any(t.startswith("motion:") for t in exp["tags"])
            start, end = exp["event"]
            assert 0 <= start < end <= 16


def test_rle_decodes_to_the_generator_masks(split_root: Path) -> None:
    masks = json.loads((split_root / "train" / "mask_dict.json").read_text())
    extra = json.loads((split_root / "train" / "synth_meta.json").read_text())
    stream = split_seed(SEED, "train")
    for index in (0, N_SPLIT - 1):
        video = generate_video(stream, index)
        objects = extra["videos"][video.name]["objects"]
        for obj_id, stack in video.object_masks.items():
            per_frame = masks[objects[str(obj_id)]["anno_id"]]
            decoded = np.stack([decode_rle(rle, video.size) for rle in per_frame])
            np.testing.assert_array_equal(decoded, stack)


def test_mevis_reader_gives_union_of_expression_objects(split_root: Path) -> None:
    dataset = MevisDataset(split_root, "train")
    video = generate_video(split_seed(SEED, "train"), 0)
    expressions = [e for e in dataset.expressions() if e.video == video.name]
    assert [e.text for e in expressions] == [e.text for e in video.expressions]
    for read, made in zip(expressions, video.expressions, strict=True):
        union = np.any([video.object_masks[o] for o in made.obj_ids], axis=0)
        np.testing.assert_array_equal(dataset.gt_masks(read), union)


# ---------------------------------------------------------------- content


def test_every_expression_refers_to_visible_objects(videos: list) -> None:
    for video in videos:
        assert video.expressions
        for exp in video.expressions:
            assert exp.obj_ids
            union = np.any([video.object_masks[o] for o in exp.obj_ids], axis=0)
            assert union.any(axis=(1, 2)).any(), (video.name, exp.text)


def test_lookalikes_are_common(videos: list) -> None:
    with_twins = sum(
        any(n > 1 for n in Counter((o.colour, o.shape, o.radius_px) for o in v.objects).values()) for v in videos
    )
    assert with_twins >= 0.4 * len(videos)


def test_telling_motion_is_local_and_twins_match_elsewhere(videos: list) -> None:
    """A look-alike's motion expression hinges on a window; outside it a twin moves exactly the same."""
    checked, partial, motion_total = 0, 0, 0
    for video in videos:
        frames = len(video.frames)
        for exp in video.expressions:
            if exp.motion is None or exp.motion == "still":
                continue
            start, end = exp.event
            motion_total += 1
            partial += (end - start) <= 0.75 * frames
            if len(exp.obj_ids) != 1:
                continue
            target = video.objects[exp.obj_ids[0]]
            twins = [
                o for o in video.objects
                if o.obj_id != target.obj_id and target.group is not None and o.group == target.group
                and (o.colour, o.shape, o.radius_px) == (target.colour, target.shape, target.radius_px)
            ]
            if not twins:
                continue
            checked += 1
            assert end - start < frames, (video.name, exp.text, exp.event)
            outside = [s for s in range(frames - 1) if s + 1 < start or s >= end]
            mine = _steps(target)
            assert any(
                mine[s] == _steps(twin)[s] for twin in twins for s in outside
            ), (video.name, exp.text, exp.event)
    assert checked >= 10
    assert partial >= 0.7 * motion_total


def test_positives_and_multi_object_expressions(videos: list) -> None:
    several = sum(any(n >= 2 for n in Counter(o for e in v.expressions for o in e.obj_ids).values()) for v in videos)
    multi = sum(any(len(e.obj_ids) > 1 for e in v.expressions) for v in videos)
    kinds = Counter(e.kind for v in videos for e in v.expressions)
    assert several >= 0.5 * len(videos)
    assert multi >= 0.3 * len(videos)
    assert set(kinds) == {"attribute", "motion", "position", "relation", "multi"}
    for video in videos:  # expression texts of a video are distinct
        texts = [e.text for e in video.expressions]
        assert len(texts) == len(set(texts))


def test_frame_sizes_vary_within_config(videos: list) -> None:
    sizes = {v.size for v in videos}
    assert len(sizes) >= 10
    assert all(96 <= s <= 160 for size in sizes for s in size)


def test_frames_depth_and_intrinsics_agree_with_masks(videos: list) -> None:
    video = videos[0]
    height, width = video.size
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in video.frames)
    assert all(d.shape == (height, width) and d.dtype == np.float32 for d in video.depth)
    assert video.intrinsics.fx == pytest.approx((width / 2) / math.tan(math.radians(30)), rel=1e-4)
    assert video.intrinsics.cx == (width - 1) / 2 and video.intrinsics.cy == (height - 1) / 2
    occupied = np.zeros((len(video.frames), height, width), dtype=bool)
    for obj in video.objects:
        stack = video.object_masks[obj.obj_id]
        assert stack.shape == (len(video.frames), height, width) and stack.dtype == bool
        assert not (occupied & stack).any()  # visible masks never overlap
        occupied |= stack
        for t in np.flatnonzero(stack.any(axis=(1, 2))):
            assert np.all(video.depth[t][stack[t]] == np.float32(obj.depth_m))
            mean = video.frames[t][stack[t]].astype(float).mean(axis=0)
            assert np.abs(mean - np.array(obj.rgb)).max() < 25, (obj, t, mean)
    assert all(video.depth[t][~occupied[t]].min() > 3.0 for t in range(len(video.frames)))


def test_write_video_frames_png_is_lossless(videos: list, tmp_path: Path) -> None:
    video = videos[1]
    paths = write_video_frames(video, tmp_path / "png", ext="png")
    assert [p.name for p in paths] == [f"{t:05d}.png" for t in range(len(video.frames))]
    back = cv2.cvtColor(cv2.imread(str(paths[3])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, video.frames[3])
    jpg = write_video_frames(video, tmp_path / "jpg")
    back = cv2.cvtColor(cv2.imread(str(jpg[3])), cv2.COLOR_BGR2RGB)
    assert np.abs(back.astype(int) - video.frames[3]).mean() < 4


# ---------------------------------------------------------------- semantics on a hand-made scene


def _obj(obj_id: int, colour: str, shape: str, steps: list, start: tuple[float, float], group=None) -> SceneObject:
    centres = np.asarray(start, dtype=float) + displacements(steps, 3.0)
    return SceneObject(obj_id, colour, COLOURS[colour], shape, 10.0, 1.0 + obj_id, tuple(steps), centres, group)


def _twins_scene() -> Scene:
    still = [None] * 11
    moving = [None] * 3 + ["left"] * 5 + [None] * 3
    objects = (
        _obj(0, "red", "circle", moving, (90, 40), group=0),
        _obj(1, "red", "circle", still, (30, 40), group=0),
        _obj(2, "blue", "square", still, (120, 40)),
    )
    return Scene(height=128, width=128, frames=12, objects=objects, scenario="move")


def test_resolve_semantics() -> None:
    facts = SceneFacts.of(_twins_scene())
    red_circle = NounPhrase("red", "circle")
    assert resolve(Description(red_circle), facts) == {0, 1}
    assert resolve(Description(red_circle, motion="left"), facts) == {0}
    assert resolve(Description(red_circle, motion="still"), facts) == {1}
    assert resolve(Description(red_circle, motion="stop"), facts) == {0}
    assert resolve(Description(NounPhrase(), motion="right"), facts) == set()
    assert resolve(Description(NounPhrase(None, "circle"), position="left"), facts) == {1}
    assert resolve(Description(red_circle, relation="near", ref=NounPhrase("blue", "square")), facts) == {0}
    assert resolve(Description(red_circle, relation="far", ref=NounPhrase("blue", "square")), facts) == {1}
    assert resolve(Description(NounPhrase("red", "circle", "big")), facts) == set()  # same size: no "big"


def test_described_look_alikes_are_never_named_by_attribute_alone() -> None:
    scene = _twins_scene()
    for seed in range(5):
        expressions = describe_scene(scene, np.random.default_rng(seed))
        singles = {e.text: e.obj_ids for e in expressions if len(e.obj_ids) == 1}
        assert not {"the red circle", "red circle", "the circle", "circle"} & set(singles)
        assert any(ids == (0,) and e.kind == "motion" for e in expressions for ids in [e.obj_ids])
        for exp in expressions:
            if exp.obj_ids == (0,) and exp.motion == "left":
                assert "left" in exp.text and exp.event == (3, 9)
        assert any(e.obj_ids == (0, 1) for e in expressions)


def _noun_tags(expression) -> set[str]:
    return {t for t in expression.tags if t.split(":")[0] in ("colour", "shape", "size")}


def test_twins_name_the_look_alike_with_the_same_noun_and_kind_of_qualifier() -> None:
    scene = _twins_scene()
    facts = SceneFacts.of(scene)
    found = 0
    for seed in range(5):
        plain = describe_scene(scene, np.random.default_rng(seed))
        again = describe_scene(scene, np.random.default_rng(seed), twins=False)
        assert [(e.text, e.obj_ids) for e in plain] == [(e.text, e.obj_ids) for e in again]   # off: unchanged
        with_twins = describe_scene(scene, np.random.default_rng(seed), twins=True)
        assert len({e.text for e in with_twins}) == len(with_twins)                            # no repeated text
        extra = with_twins[len(plain):] if len(with_twins) > len(plain) else []
        assert len(with_twins) >= len(plain)
        for twin in extra:
            # a twin names one object, says what the generator resolves, and has a partner of the same kind
            # naming the other look-alike (objects 0 and 1 are the red circles)
            assert len(twin.obj_ids) == 1 and twin.obj_ids[0] in (0, 1) and twin.kind != "attribute"
            partners = [e for e in with_twins[: len(with_twins) - len(extra)]
                        if e.kind == twin.kind and len(e.obj_ids) == 1 and e.obj_ids[0] in (0, 1)
                        and e.obj_ids != twin.obj_ids and _noun_tags(e) == _noun_tags(twin)]
            assert partners, twin.text
            found += 1
    assert found > 0
    # every twin is unambiguous by the generator's own semantics
    for e in describe_scene(scene, np.random.default_rng(0), twins=True):
        assert e.obj_ids and set(e.obj_ids) <= {o.obj_id for o in facts.scene.objects}


def test_twins_option_reaches_the_written_split(tmp_path: Path) -> None:
    write_split(tmp_path / "a", "train", 4, SEED)
    write_split(tmp_path / "b", "train", 4, SEED, SynthConfig(twins=True))
    count = [sum(len(v["expressions"]) for v in json.loads((tmp_path / r / "train" / "meta_expressions.json")
                                                          .read_text())["videos"].values()) for r in ("a", "b")]
    assert count[1] > count[0]
    meta = json.loads((tmp_path / "b" / "train" / "synth_meta.json").read_text())
    assert meta["generator"]["config"]["twins"] is True


def test_motion_tags_and_events() -> None:
    steps = [None, None, "left", "left", "left", None, None]
    tags = motion_tags(steps, [True] * 8)
    assert tags == {"left": (2, 6), "start": (1, 5), "stop": (3, 7)}
    assert motion_tags([None] * 7, [True] * 8) == {"still": (0, 8)}
    turn = motion_tags(["up"] * 3 + ["right"] * 3, [True] * 7)
    assert turn["turn:up-right"] == (0, 7) and "start" not in turn and "stop" not in turn
    entering = motion_tags(["right"] * 7, [False, False, True, True, True, True, True, True])
    assert entering["enter"] == (0, 4) and "leave" not in entering
    with pytest.raises(ValueError, match="sideways"):
        motion_tags(["sideways"], [True, True])
    with pytest.raises(ValueError, match="inside has 3 flags"):
        motion_tags([None], [True] * 3)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_have_equal_area_and_stay_within_reach(shape: str) -> None:
    mask = shape_mask(shape, 40.0, 40.0, 12.0, 80, 80)
    assert mask.sum() == pytest.approx(math.pi * 144, rel=0.06)
    ys, xs = np.nonzero(mask)
    assert np.hypot(xs - 40.0, ys - 40.0).max() <= shape_extent(shape, 12.0) + 1e-9
    assert not shape_mask(shape, -50.0, 40.0, 12.0, 80, 80).any()  # fully outside: empty, no error


def test_unknown_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="hexagon"):
        shape_mask("hexagon", 1, 1, 3, 8, 8)


# ---------------------------------------------------------------- bad input


def test_bad_video_count_is_an_error(tmp_path: Path) -> None:
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"got {bad}"):
            write_split(tmp_path, "train", bad, 0)
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("split", ["../escape", "a/b", "", "x y"])
def test_split_with_path_characters_is_an_error(tmp_path: Path, split: str) -> None:
    with pytest.raises(ValueError, match="split name"):
        write_split(tmp_path, split, 1, 0)


def test_out_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    with pytest.raises(ValueError, match="not_a_dir is a file"):
        write_split(target, "train", 1, 0)


def test_existing_split_needs_overwrite_and_only_replaces_synth_output(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 1, 0)
    with pytest.raises(ValueError, match="not empty"):
        write_split(tmp_path, "train", 1, 0)
    write_split(tmp_path, "train", 2, 0, overwrite=True)
    assert len(json.loads((tmp_path / "train" / "meta_expressions.json").read_text())["videos"]) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"no synth_meta\.json"):
        write_split(tmp_path, "mine", 1, 0, overwrite=True)
    assert (tmp_path / "mine" / "precious.txt").exists()


def test_bad_config_and_seed_are_errors() -> None:
    with pytest.raises(ValueError, match="frames"):
        SynthConfig(frames=4)
    with pytest.raises(ValueError, match="min_side"):
        SynthConfig(min_side=200, max_side=100)
    with pytest.raises(ValueError, match="p_occluder"):
        SynthConfig(p_occluder=1.5)
    with pytest.raises(ValueError, match="seed"):
        generate_video(-1)
    with pytest.raises(ValueError, match="'gif'"):
        write_video_frames(generate_video(0), Path("/nonexistent"), ext="gif")


# ---------------------------------------------------------------- CLI


def test_cli_writes_a_split(tmp_path: Path) -> None:
    code = main(["synth", "--out", str(tmp_path), "--videos", "2", "--seed", "4", "--split", "valid", "--frames", "8"])
    assert code == 0
    meta = json.loads((tmp_path / "valid" / "meta_expressions.json").read_text())
    assert len(meta["videos"]) == 2
    assert all(len(v["frames"]) == 8 for v in meta["videos"].values())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--videos", "0"], "got 0"),
        (["--videos", "1", "--split", "../up"], "'../up'"),
        (["--videos", "1", "--frames", "3"], "frames must be >= 8"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    assert main(["synth", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("glus-ros synth: error:") and message in err[-1]


def test_cli_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["synth", "--out", str(target), "--videos", "1"]) == 2
    assert "file.txt is a file" in capsys.readouterr().err
