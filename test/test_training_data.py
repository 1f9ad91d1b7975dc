"""Training samples: frame draws, reproducibility, object keys, corrupt files, mixing and batching."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from glus_ros.data.config import SynthConfig
from glus_ros.data.synth import write_split
from glus_ros.datasets.mevis import MevisDataset
from glus_ros.datasets.refytvos import RefYoutubeVosDataset
from glus_ros.sampling import segment_bounds
from glus_ros.training.data import (
    ClipSample,
    MixedClipDataset,
    ObjectKeyRegistry,
    ReferringClipDataset,
    collate_clips,
    make_collate,
)

from helpers_datasets import write_refytvos

FRAMES = 8


def _synth(root: Path) -> MevisDataset:
    write_split(root, "train", videos=3, seed=1, config=SynthConfig(frames=FRAMES))
    return MevisDataset(root, "train")


def _refytvos(root: Path) -> RefYoutubeVosDataset:
    """Two videos of different sizes; object 1 moves one column per frame so query masks differ by frame."""
    frames = {"va": [f"{i:05d}" for i in range(10)], "vb": [f"{i:05d}" for i in range(6)]}
    sizes = {"va": (24, 32), "vb": (30, 20)}
    labels: dict[str, list[np.ndarray]] = {}
    for video, names in frames.items():
        maps = []
        for t in range(len(names)):
            lab = np.zeros(sizes[video], dtype=np.uint8)
            lab[2:8, t : t + 4] = 1
            lab[12:20, 10:14] = 2
            maps.append(lab)
        labels[video] = maps
    expressions = {
        "va": {
            "0": {"exp": "the moving square", "obj_id": "1"},
            "1": {"exp": "the square sliding right", "obj_id": ["1"]},
            "2": {"exp": "the still block", "obj_id": "2"},
            "3": {"exp": "both shapes", "obj_id": ["2", "1"]},
        },
        "vb": {"0": {"exp": "the moving square", "obj_id": "1"}},
    }
    write_refytvos(root, "train", frames, sizes, expressions, labels)
    return RefYoutubeVosDataset(root, "train")


@pytest.fixture(scope="module")
def synth_reader(tmp_path_factory: pytest.TempPathFactory) -> MevisDataset:
    return _synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def ytvos_reader(tmp_path_factory: pytest.TempPathFactory) -> RefYoutubeVosDataset:
    return _refytvos(tmp_path_factory.mktemp("ytvos"))


def _draws(ds: ReferringClipDataset) -> list[tuple[list[int], list[int]]]:
    return [(s.context_idx, s.query_idx) for s in (ds[i] for i in range(len(ds)))]


def test_sample_shapes_and_dtypes(synth_reader: MevisDataset) -> None:
    ds = ReferringClipDataset(synth_reader, "mevis", num_context=4, num_query=3)
    for i in (0, len(ds) - 1):
        s = ds[i]
        h, w = synth_reader.frame_size(s.video)
        assert len(s.context) == 4 and len(s.query) == 3
        for frame in s.context + s.query:
            assert frame.dtype == np.uint8 and frame.shape == (h, w, 3)
        assert s.query_masks.dtype == bool and s.query_masks.shape == (3, h, w)
        assert s.expression == synth_reader.expressions()[i].text
        assert s.dataset == "mevis"


@pytest.mark.parametrize("reader_name", ["synth_reader", "ytvos_reader"])
def test_context_per_segment_query_consecutive_and_masks_match(
    reader_name: str, request: pytest.FixtureRequest
) -> None:
    reader = request.getfixturevalue(reader_name)
    ds = ReferringClipDataset(reader, "d", num_context=4, num_query=4, seed=3)
    expressions = reader.expressions()
    mask_pixels = 0
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            names = reader.frames(s.video)
            for k, (start, end) in enumerate(segment_bounds(len(names), 4)):
                assert start <= s.context_idx[k] < end
            assert s.query_idx == list(range(s.query_idx[0], s.query_idx[0] + 4))
            assert s.query_idx[-1] < len(names)
            expected = reader.gt_masks(expressions[i])[s.query_idx]
            np.testing.assert_array_equal(s.query_masks, expected)
            mask_pixels += int(expected.sum())
            np.testing.assert_array_equal(s.context[0], reader.load_frame(s.video, names[s.context_idx[0]]))
            np.testing.assert_array_equal(s.query[-1], reader.load_frame(s.video, names[s.query_idx[-1]]))
    assert mask_pixels > 0  # the comparison above was not between empty masks only


def test_same_seed_epoch_index_is_reproducible_and_epoch_changes_draw(synth_reader: MevisDataset) -> None:
    a = ReferringClipDataset(synth_reader, "mevis", seed=7)
    b = ReferringClipDataset(synth_reader, "mevis", seed=7)
    for i in (0, 5, len(a) - 1):
        sa, sb = a[i], b[i]
        assert (sa.context_idx, sa.query_idx) == (sb.context_idx, sb.query_idx)
        for x, y in zip(sa.context + sa.query, sb.context + sb.query, strict=True):
            np.testing.assert_array_equal(x, y)
    first = _draws(a)
    a.set_epoch(1)
    second = _draws(a)
    assert sum(x != y for x, y in zip(first, second, strict=True)) >= len(a) // 2
    a.set_epoch(0)
    assert _draws(a) == first
    other_seed = ReferringClipDataset(synth_reader, "mevis", seed=8)
    assert _draws(other_seed) != first


def test_object_keys_shared_by_same_object_set_only(
    synth_reader: MevisDataset, ytvos_reader: RefYoutubeVosDataset
) -> None:
    registry = ObjectKeyRegistry()
    yt = ReferringClipDataset(ytvos_reader, "refytvos", registry=registry)
    mv = ReferringClipDataset(synth_reader, "mevis", registry=registry)
    keys = [yt[i].object_key for i in range(len(yt))]
    # va/0 and va/1 both name object 1; va/3 names {1, 2}; vb/0 names object 1 of another video
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3], keys[4]}) == 4
    mv_keys = {mv.object_key(i) for i in range(len(mv))}
    assert not mv_keys & set(keys)  # keys never collide across datasets
    exps = synth_reader.expressions()
    for i in range(len(mv)):
        for j in range(len(mv)):
            same = (exps[i].video, sorted(exps[i].obj_ids)) == (exps[j].video, sorted(exps[j].obj_ids))
            assert (mv.object_key(i) == mv.object_key(j)) == same
    assert registry.key("mevis", exps[9].video, (2, 0)) == mv.object_key(9)  # synth_00000/9 is objects {0, 2}


def test_corrupt_jpeg_raise_names_file_and_skip_returns_valid_sample(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = _synth(tmp_path)
    probe = ReferringClipDataset(reader, "mevis", on_error="raise")
    s0 = probe[0]
    bad = reader.frame_path(s0.video, reader.frames(s0.video)[s0.query_idx[1]])
    bad.write_bytes(b"this is not a jpeg")

    strict = ReferringClipDataset(reader, "mevis", on_error="raise")
    with pytest.raises(ValueError, match=re.escape(bad.name)) as info:
        strict[0]
    assert str(bad) in str(info.value)

    # what "skip" must return: the first later index whose draw avoids the bad frame
    expected = None
    for j in range(1, len(strict)):
        try:
            expected = strict[j]
            break
        except ValueError:
            continue
    assert expected is not None

    lenient = ReferringClipDataset(reader, "mevis", on_error="skip")
    with caplog.at_level(logging.WARNING, logger="glus_ros.training.data"):
        got = lenient[0]
    assert lenient.skipped >= 1
    assert any(str(bad) in reason for reason in lenient.skip_reasons)
    assert str(bad) in caplog.text
    assert (got.video, got.query_idx, got.context_idx) == (expected.video, expected.query_idx, expected.context_idx)
    np.testing.assert_array_equal(got.query_masks, expected.query_masks)

    bad.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(bad.name)):
        ReferringClipDataset(reader, "mevis", on_error="raise")[0]


def test_corrupt_mask_json_and_all_failing(tmp_path: Path) -> None:
    reader = _synth(tmp_path / "mevis")
    (tmp_path / "mevis" / "train" / "mask_dict.json").write_text("{ broken")
    with pytest.raises(ValueError, match=r"mask_dict\.json"):
        ReferringClipDataset(reader, "mevis", on_error="raise")[3]
    lenient = ReferringClipDataset(reader, "mevis", on_error="skip")
    with pytest.raises(RuntimeError, match="every one of the"):
        lenient[0]
    assert lenient.skipped == len(lenient)


def test_bad_arguments_are_named(ytvos_reader: RefYoutubeVosDataset) -> None:
    with pytest.raises(ValueError, match="on_error"):
        ReferringClipDataset(ytvos_reader, "y", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_query"):
        ReferringClipDataset(ytvos_reader, "y", num_query=0)
    with pytest.raises(IndexError, match="out of range"):
        ReferringClipDataset(ytvos_reader, "y")[99]


def test_mask_cache_is_bounded(synth_reader: MevisDataset) -> None:
    ds = ReferringClipDataset(synth_reader, "mevis", mask_cache_size=2)
    for i in range(len(ds)):
        ds[i]
        assert len(ds._mask_cache) <= 2


def test_mixing_ratios(synth_reader: MevisDataset, ytvos_reader: RefYoutubeVosDataset) -> None:
    a = ReferringClipDataset(synth_reader, "mevis")
    b = ReferringClipDataset(ytvos_reader, "refytvos")
    mix = MixedClipDataset([(a, 3.0), (b, 1.0)], length=400, seed=2)
    sources = [mix.source(i) for i in range(len(mix))]
    share = sum(k == 0 for k, _ in sources) / len(sources)
    assert 0.68 <= share <= 0.82
    assert all(0 <= inner < len(a if k == 0 else b) for k, inner in sources)
    assert sources == [MixedClipDataset([(a, 3.0), (b, 1.0)], 400, seed=2).source(i) for i in range(400)]
    for i in (0, 1, 2, 3):
        k, inner = sources[i]
        s = mix[i]
        ref = (a if k == 0 else b)[inner]
        assert s.dataset == ("mevis" if k == 0 else "refytvos")
        assert (s.video, s.query_idx, s.expression) == (ref.video, ref.query_idx, ref.expression)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ratio of dataset 1"):
            MixedClipDataset([(a, 1.0), (b, bad)], length=10)


def test_positive_pairs_repeat_the_object_set_of_the_sample_before(ytvos_reader: RefYoutubeVosDataset) -> None:
    ds = ReferringClipDataset(ytvos_reader, "refytvos")
    keys = [ds.object_key(i) for i in range(len(ds))]
    for i in range(len(ds)):
        assert sorted(ds.positives(i)) == [j for j in range(len(ds)) if j != i and keys[j] == keys[i]]
    assert any(ds.positives(i) for i in range(len(ds))) and any(not ds.positives(i) for i in range(len(ds)))
    plain = MixedClipDataset([(ds, 1.0)], length=200, seed=4)
    paired = MixedClipDataset([(ds, 1.0)], length=200, seed=4, positive_pairs=True)
    with_partner = 0
    for i in range(0, 200, 2):
        anchor, partner = paired.source(i), paired.source(i + 1)
        assert anchor == plain.source(i)          # even indices draw as without pairs
        if ds.positives(anchor[1]):
            assert partner[1] != anchor[1] and keys[partner[1]] == keys[anchor[1]]
            with_partner += 1
        else:                                      # no other expression of that object: a plain draw
            assert partner == plain.source(i + 1)
    assert with_partner > 20


def test_collate_mixed_sizes(synth_reader: MevisDataset, ytvos_reader: RefYoutubeVosDataset) -> None:
    a = ReferringClipDataset(synth_reader, "mevis", num_context=3, num_query=2)
    b = ReferringClipDataset(ytvos_reader, "refytvos", num_context=3, num_query=2)
    samples: list[ClipSample] = [a[0], a[len(a) - 1], b[0]]
    assert len({s.query[0].shape for s in samples}) == 3  # three different frame sizes
    batch = collate_clips(samples, clip_size=32, sam_size=48)
    assert batch["context_clip"].shape == (3, 3, 3, 32, 32)
    assert batch["query_clip"].shape == (3, 2, 3, 32, 32)
    assert batch["query_sam"].shape == (3, 2, 3, 48, 48)
    assert batch["query_masks"].shape == (3, 2, 48, 48)
    assert batch["query_masks"].dtype == torch.float32
    assert set(batch["query_masks"].unique().tolist()) == {0.0, 1.0}
    for k, s in enumerate(samples):
        assert bool(batch["query_masks"][k].any()) == bool(s.query_masks.any())
    assert batch["object_keys"].dtype == torch.long
    assert batch["object_keys"].tolist() == [s.object_key for s in samples]
    assert batch["expressions"] == [s.expression for s in samples]
    assert batch["meta"][2] == ("refytvos", samples[2].video, samples[2].query_idx)
    assert torch.isfinite(batch["query_sam"]).all() and batch["query_sam"].min() < 0  # normalised, not [0, 1]

    loader = DataLoader(b, batch_size=2, collate_fn=make_collate(16, 24))
    first = next(iter(loader))
    assert first["query_sam"].shape == (2, 2, 3, 24, 24)

    mismatched = ReferringClipDataset(ytvos_reader, "refytvos", num_context=2, num_query=2)[0]
    with pytest.raises(ValueError, match="sample 1"):
        collate_clips([samples[0], mismatched], 32, 48)
