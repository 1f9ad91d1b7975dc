"""Grounding data of the synthetic benchmark: counting questions, grounded captions, region prompts.

Also the guard that adding them changed nothing the generator wrote before (a model trains on those splits).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glus_ros.data import SynthConfig, SyntheticVideo, generate_video, split_seed, write_split
from glus_ros.data.expressions import (
    Description,
    NounPhrase,
    SceneFacts,
    count_questions,
    grounded_captions,
    resolve,
)
from glus_ros.data.grounding import (
    GROUNDING_KEYS,
    PHRASE_END,
    PHRASE_START,
    SEG,
    SynthCaption,
    SynthQuestion,
    count_expressions,
    load_grounding,
    parse_marked,
    phrase_expressions,
)
from glus_ros.data.scene import sample_scene
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.datasets.rle import decode_rle

# Digests of write_split(<tmp>, split, n, seed) taken with the generator as it was BEFORE grounding data
# existed; synth_meta.json is hashed without the new keys. JPEG bytes depend on the OpenCV build (5.0.0 here).
GOLDEN: dict[tuple[str, int, int], dict[str, str]] = {
    ("train", 3, 2024): {
        "meta_expressions.json": "afd007b568bcac132856db477373608cf5f918dbc163a17f880ce6cc9ecce396",
        "mask_dict.json": "f6cf4cba35146b4892a606385e8bd6249b3bcbe2f52ca490d85e052e05442d3e",
        "synth_meta.json": "94a3b4b8b8d18640aad5f2571c7219f174370800a41ee94c6183a4b17cb038d2",
        "JPEGImages": "b93ad86690f429eaad2d4bc83828cfe70ec3d57df8c0dd707ad0254faeb022d0",
    },
    ("valid", 2, 7): {
        "meta_expressions.json": "548125152bc20f85246b0a8ffae4b2d2d4d4871e7671c06f4cf8f8276afdb7ec",
        "mask_dict.json": "7c6666d06bbfbd80eed8af2cd6100edef034c9ed15a13afb6c6024976cf62b87",
        "synth_meta.json": "43e97a057249de45bc75c5188b4397295b41e7d59b7b3b469c072cd206b28f7f",
        "JPEGImages": "9a8b3f12927f3d738198b0561d08fe456aecfb2f169381ccdc3eac9e09b447a1",
    },
}
SPLIT, N_SPLIT, SEED = "train", 3, 2024
N_VIDEOS = 16
_COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def _digest(split_dir: Path) -> dict[str, str]:
    out = {name: hashlib.sha256((split_dir / name).read_bytes()).hexdigest()
           for name in ("meta_expressions.json", "mask_dict.json")}
    extra = json.loads((split_dir / "synth_meta.json").read_text())
    for video in extra["videos"].values():
        for key in GROUNDING_KEYS:
            video.pop(key)
    # the writer's own format: dropping the new keys must give back the old file byte for byte
    out["synth_meta.json"] = hashlib.sha256(json.dumps(extra, separators=(",", ":")).encode()).hexdigest()
    frames = hashlib.sha256()
    for path in sorted((split_dir / "JPEGImages").rglob("*.jpg")):
        frames.update(str(path.relative_to(split_dir)).encode())
        frames.update(path.read_bytes())
    out["JPEGImages"] = frames.hexdigest()
    return out


@pytest.fixture(scope="module")
def split_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_grounding")
    write_split(root, SPLIT, N_SPLIT, SEED)
    return root


@pytest.fixture(scope="module")
def videos() -> list[SyntheticVideo]:
    return [generate_video(11, i) for i in range(N_VIDEOS)]


def _objects(video: SyntheticVideo) -> dict[str, dict[str, Any]]:
    """The object facts in the form synth_meta.json stores them."""
    return {str(o.obj_id): asdict(o) for o in video.objects}


def _matching(objects: dict[str, dict[str, Any]], tags: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Objects with every colour/shape/motion fact the tags state, found without the generator's resolve()."""
    keep = []
    for key, obj in objects.items():
        ok = True
        for tag in tags:
            name, _, value = tag.partition(":")
            if name == "colour":
                ok &= obj["colour"] == value
            elif name == "shape":
                ok &= obj["shape"] == value
            elif name == "motion":
                ok &= value in obj["motion_tags"]
        if ok:
            keep.append(int(key))
    return tuple(sorted(keep))


# ---------------------------------------------------------------- the old outputs stay as they were


@pytest.mark.parametrize("key", list(GOLDEN))
def test_pre_grounding_outputs_are_byte_identical(key: tuple[str, int, int], tmp_path: Path) -> None:
    split, videos, seed = key
    split_dir = write_split(tmp_path, split, videos, seed)
    assert _digest(split_dir) == GOLDEN[key]
    extra = json.loads((split_dir / "synth_meta.json").read_text())
    for video in extra["videos"].values():
        assert list(video)[-3:] == list(GROUNDING_KEYS)  # new keys only, after the old ones


def test_old_constructor_still_works(videos: list[SyntheticVideo]) -> None:
    video = videos[0]
    old = {f.name: getattr(video, f.name) for f in fields(SyntheticVideo) if f.name not in GROUNDING_KEYS}
    bare = SyntheticVideo(**old)
    assert bare.questions == [] and bare.captions == [] and bare.regions == []


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_same_grounding(split_root: Path, tmp_path: Path) -> None:
    again = write_split(tmp_path, SPLIT, N_SPLIT, SEED)
    assert (again / "synth_meta.json").read_bytes() == (split_root / SPLIT / "synth_meta.json").read_bytes()
    first, second = generate_video(11, 3), generate_video(11, 3)
    assert (first.questions, first.captions, first.regions) == (second.questions, second.captions, second.regions)
    other = generate_video(12, 3)
    assert (other.questions, other.captions) != (first.questions, first.captions)


def test_grounding_does_not_depend_on_python_hash_seed(videos: list[SyntheticVideo]) -> None:
    code = (
        "import json; from dataclasses import asdict; from glus_ros.data import generate_video\n"
        "v = [generate_video(11, i) for i in range(2)]\n"
        "print(json.dumps([[asdict(x) for x in (*w.questions, *w.captions, *w.regions)] for w in v]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, check=True, capture_output=True, text=True)
    ours = [[asdict(x) for x in (*w.questions, *w.captions, *w.regions)] for w in videos[:2]]
    assert json.loads(run.stdout) == json.loads(json.dumps(ours))


# ---------------------------------------------------------------- counting questions


def _check_questions(questions: list[SynthQuestion], objects: dict[str, dict[str, Any]]) -> None:
    for q in questions:
        assert q.kind == "count" and q.text.startswith("how many ") and q.text.endswith("?")
        assert q.count == len(q.obj_ids) and q.answer == str(q.count)
        assert q.obj_ids == _matching(objects, q.tags), q  # recomputed from the object facts alone
        words = re.findall(r"[a-z]+", q.text)
        for tag in q.tags:
            name, _, value = tag.partition(":")
            if name == "colour":
                assert value in words
            elif name == "shape":
                assert value + "s" in words
            elif name == "motion" and value in ("left", "right", "up", "down"):
                assert value in words
    assert len({q.text for q in questions}) == len(questions)


def test_counting_answers_match_object_facts(videos: list[SyntheticVideo]) -> None:
    for video in videos:
        assert len(video.questions) == 6
        _check_questions(video.questions, _objects(video))


def test_zero_count_questions_and_a_range_of_answers(videos: list[SyntheticVideo]) -> None:
    zero_kinds = set()
    for video in videos:
        zeros = [q for q in video.questions if q.count == 0]
        assert 1 <= len(zeros) <= 2
        assert any(q.count > 0 for q in video.questions)
        zero_kinds |= {"motion" if any(t.startswith("motion:") for t in q.tags) else "noun" for q in zeros}
    assert zero_kinds == {"motion", "noun"}
    answers = {q.count for v in videos for q in v.questions}
    assert {0, 1, 2, 3} <= answers


def test_counting_questions_on_disk_match_synth_meta_objects(split_root: Path) -> None:
    extra = json.loads((split_root / SPLIT / "synth_meta.json").read_text())
    for name, data in load_grounding(split_root / SPLIT).items():
        _check_questions(data.questions, extra["videos"][name]["objects"])


# ---------------------------------------------------------------- grounded captions


def _check_caption(caption: SynthCaption, objects: dict[str, dict[str, Any]]) -> None:
    plain, spans = parse_marked(caption.text)
    assert plain == caption.plain
    assert spans == [(s, e) for s, e, _ in caption.phrases]
    assert caption.text.count(SEG) == caption.text.count(PHRASE_START) == len(caption.phrases) > 0
    assert re.fullmatch(r"[^<\[]*(<p>[^<]+</p> \[SEG\][^<\[]*)+", caption.text)
    assert caption.plain[0].isupper() and caption.plain.endswith(".")
    covered: list[int] = []
    for (start, end, ids), tags in zip(caption.phrases, caption.phrase_tags, strict=True):
        words = caption.plain[start:end].lower().split()
        covered += ids
        base = _matching(objects, [t for t in tags if t.startswith(("colour:", "shape:"))])
        assert ids and set(ids) <= set(base)
        kinds = {t.partition(":")[0] for t in tags}
        if kinds <= {"colour", "shape", "motion"}:
            assert ids == _matching(objects, tags), (caption.text, tags)  # exactly the objects it names
        elif "size" in kinds:
            radius = {i: objects[str(i)]["radius_px"] for i in base}
            pick = max if "size:big" in tags else min
            assert ids == (pick(radius, key=radius.get),)
        else:  # position / relation: one object singled out
            assert len(ids) == 1
        if words[0] in ("a", "an"):
            assert len(ids) == 1
        elif words[0] in _COUNT_WORDS:
            assert len(ids) == _COUNT_WORDS[words[0]]
        for tag in tags:
            name, _, value = tag.partition(":")
            if name == "colour":
                assert value in words
            elif name == "shape":
                assert value in words or value + "s" in words
        verb = re.match(r"( that)? (?:(stays? still)|(comes? into view)|(leaves? the scene)|(?:starts? )?"
                        r"mov(?:es|e|ing) (left|right|up|down))", caption.plain[end:])
        if verb:  # what the phrase's objects are said to do is true of each of them
            need = ("still" if verb.group(2) else "enter" if verb.group(3) else "leave" if verb.group(4)
                    else verb.group(5))
            assert all(need in objects[str(i)]["motion_tags"] for i in ids), (caption.text, need)
    assert len(covered) == len(set(covered))  # no object in two phrases of one caption


def test_caption_phrases_slice_plain_text_and_name_their_objects(videos: list[SyntheticVideo]) -> None:
    styles = set()
    for video in videos:
        assert 1 <= len(video.captions) <= 2
        for caption in video.captions:
            _check_caption(caption, _objects(video))
            styles.add(caption.plain.startswith(("The video shows ", "We see ", "In the video we see ")))
    assert styles == {True, False}  # both sentences of clauses and listings occur


def test_every_caption_phrase_resolves_to_exactly_its_objects() -> None:
    """On bare scenes: rebuild each phrase's description from its tags and resolve it."""
    rng, config, checked = np.random.default_rng(3), SynthConfig(), 0
    for _ in range(60):
        scene = sample_scene(rng, config)
        if scene is None:
            continue
        facts = SceneFacts.of(scene)
        for caption in grounded_captions(facts, np.random.default_rng(checked)):
            for (_, _, ids), tags in zip(caption.phrases, caption.phrase_tags, strict=True):
                got = dict(t.split(":", 1) for t in tags)
                if "relation" in got:
                    continue  # its reference noun is not in the tags
                noun = NounPhrase(got.get("colour"), got.get("shape"), got.get("size"))
                desc = Description(noun, motion=got.get("motion"), position=got.get("position"))
                assert resolve(desc, facts) == frozenset(ids), (caption.text, tags)
                checked += 1
        for q in count_questions(facts, np.random.default_rng(1)):
            got = dict(t.split(":", 1) for t in q.tags)
            desc = Description(NounPhrase(got.get("colour"), got.get("shape")), motion=got.get("motion"))
            assert tuple(sorted(resolve(desc, facts))) == q.obj_ids
    assert checked > 100


# ---------------------------------------------------------------- region prompts


def test_region_boxes_are_the_mask_boxes_at_their_frame(videos: list[SyntheticVideo]) -> None:
    for video in videos:
        assert len(video.regions) == min(3, len(video.objects))
        assert len({r.obj_id for r in video.regions}) == len(video.regions)
        seen = {o.obj_id: o.visibility for o in video.objects}
        for region in video.regions:
            mask = video.object_masks[region.obj_id][region.frame]
            ys, xs = np.nonzero(mask)
            assert region.box == (xs.min(), ys.min(), xs.max(), ys.max())
            x, y = region.point
            assert mask[y, x]
            assert seen[region.obj_id][region.frame] >= min(0.5, max(seen[region.obj_id])) - 1e-4
            own = [e.text for e in video.expressions if e.obj_ids == (region.obj_id,)]
            if own:
                assert region.text in own and region.unique
            assert region.text


def test_region_boxes_on_disk_match_mask_dict(split_root: Path) -> None:
    masks = json.loads((split_root / SPLIT / "mask_dict.json").read_text())
    extra = json.loads((split_root / SPLIT / "synth_meta.json").read_text())
    for name, data in load_grounding(split_root / SPLIT).items():
        height, width = extra["videos"][name]["size"]
        for region in data.regions:
            mask = decode_rle(masks[data.anno_ids[region.obj_id]][region.frame], (height, width))
            ys, xs = np.nonzero(mask)
            assert region.box == (xs.min(), ys.min(), xs.max(), ys.max())


# ---------------------------------------------------------------- reader


def test_load_grounding_round_trip(split_root: Path) -> None:
    loaded = load_grounding(split_root / SPLIT)
    extra = json.loads((split_root / SPLIT / "synth_meta.json").read_text())
    stream = split_seed(SEED, SPLIT)
    assert len(loaded) == N_SPLIT
    for index in range(N_SPLIT):
        video = generate_video(stream, index)
        data = loaded[video.name]
        assert data.video == video.name
        assert (data.questions, data.captions, data.regions) == (video.questions, video.captions, video.regions)
        objects = extra["videos"][video.name]["objects"]
        assert data.anno_ids == {int(k): v["anno_id"] for k, v in objects.items()}


def test_count_expressions_reuse_the_mevis_masks(split_root: Path) -> None:
    expressions = count_expressions(split_root / SPLIT)
    dataset = MevisDataset(split_root, SPLIT)
    video = generate_video(split_seed(SEED, SPLIT), 0)
    mine = [e for e in expressions if e.video == video.name]
    assert [e.exp_id for e in mine] == [f"q{i}" for i in range(len(video.questions))]
    assert len(expressions) == sum(len(d.questions) for d in load_grounding(split_root / SPLIT).values())
    for expression, question in zip(mine, video.questions, strict=True):
        assert (expression.text, expression.obj_ids) == (question.text, question.obj_ids)
        want = np.zeros((len(video.frames), *video.size), dtype=bool)
        for obj_id in question.obj_ids:
            want |= video.object_masks[obj_id]
        np.testing.assert_array_equal(dataset.gt_masks(expression), want)  # all empty for a zero answer
    phrases = [e for e in phrase_expressions(split_root / SPLIT) if e.video == video.name]
    caption = video.captions[0]
    assert [e.text for e in phrases[: len(caption.phrases)]] == caption.phrase_texts()
    first = phrases[0]
    np.testing.assert_array_equal(dataset.gt_masks(first), np.any([video.object_masks[o] for o in first.obj_ids], 0))


def test_markers_are_reserved_tokens() -> None:
    from glus_ros.model.tokenizer import EXTRA_SPECIAL_TOKENS, SEG_TOKEN

    assert SEG == SEG_TOKEN and {PHRASE_START, PHRASE_END} <= set(EXTRA_SPECIAL_TOKENS)


# ---------------------------------------------------------------- errors


def _rewrite(split_root: Path, tmp_path: Path, edit: Any) -> Path:
    data = json.loads((split_root / SPLIT / "synth_meta.json").read_text())
    edit(data["videos"]["synth_00000"])
    (tmp_path / "synth_meta.json").write_text(json.dumps(data))
    return tmp_path


def test_split_without_grounding_data_is_an_error(split_root: Path, tmp_path: Path) -> None:
    def strip(video: dict) -> None:
        for key in GROUNDING_KEYS:
            del video[key]

    with pytest.raises(ValueError, match="written before the generator made grounding data"):
        load_grounding(_rewrite(split_root, tmp_path, strip))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda v: v["captions"][0].update(plain="x" * len(v["captions"][0]["plain"])), "disagree"),
        (lambda v: v["questions"][0].update(obj_id=[99], count=1), "not among its objects"),
        (lambda v: v["questions"][0].update(count=v["questions"][0]["count"] + 1), "must equal"),
        (lambda v: v["regions"][0].update(box=[1, 2, 3]), "expected 4 integers"),
        (lambda v: v["regions"][0].pop("frame"), "malformed grounding entry"),
    ],
)
def test_malformed_grounding_is_an_error(split_root: Path, tmp_path: Path, edit: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_grounding(_rewrite(split_root, tmp_path, edit))


def test_missing_synth_meta_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"synth_meta\.json"):
        load_grounding(tmp_path)


@pytest.mark.parametrize("text", ["<p>a red circle [SEG] moves.", "a </p> b", "<p>a circle</p> moves", "[SEG] x",
                                  "<p>a <p>b</p> [SEG]"])
def test_malformed_marked_text_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed grounded text"):
        parse_marked(text)


def test_parse_marked_tolerates_a_missing_space_before_seg() -> None:
    assert parse_marked("<p>A red circle</p>[SEG] moves.") == ("A red circle moves.", [(0, 12)])


def test_bad_records_and_limits_are_errors() -> None:
    with pytest.raises(ValueError, match="holds a marker"):
        SynthCaption.from_parts([("a [SEG] circle", (0,), ())])
    with pytest.raises(ValueError, match="must equal"):
        SynthQuestion("how many circles are there?", (0, 1), 3)
    scene = None
    rng = np.random.default_rng(0)
    while scene is None:
        scene = sample_scene(rng, SynthConfig())
    facts = SceneFacts.of(scene)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        count_questions(facts, rng, 0)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        grounded_captions(facts, rng, 0)


def test_caption_records_check_their_spans() -> None:
    assert SynthCaption("<p>x</p> [SEG].", "x.", ((0, 1, (0,)),)).phrase_tags == ((),)
    with pytest.raises(ValueError, match="outside the text"):
        SynthCaption("<p>x</p> [SEG].", "x.", ((0, 5, (0,)),))
    with pytest.raises(ValueError, match="tag sets"):
        SynthCaption("<p>x</p> [SEG].", "x.", ((0, 1, (0,)),), ((), ()))
