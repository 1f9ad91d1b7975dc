"""ApproximateTimeSync: matching within slop, best match, out-of-order arrivals, bounded queues, drop counts."""

from __future__ import annotations

import threading

import pytest

from glus_ros.ros.sync import ApproximateTimeSync


def _pairs(matches) -> list[tuple[float, float]]:
    return [m.stamps for m in matches]


def test_identical_stamps_match_at_once() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.01)
    assert sync.push("image", 1.0, "i1") == []
    (match,) = sync.push("depth", 1.0, "d1")
    assert match.stamps == (1.0, 1.0) and match.items == ("i1", "d1")
    assert match.item("depth") == "d1" and match.spread == 0.0
    assert sync.queued("image") == [] and sync.queued("depth") == []
    assert sync.stats.emitted == 1 and sync.stats.dropped == {"image": 0, "depth": 0}


def test_pairs_within_slop_wait_until_no_better_match_can_come() -> None:
    """0.100/0.104 is within slop, but the set is emitted only once both streams moved past it."""
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.01)
    assert sync.push("image", 0.100, "i1") == []
    assert sync.push("depth", 0.104, "d1") == []  # a later image could still be closer to 0.104
    matches = sync.push("image", 0.133, "i2")
    assert _pairs(matches) == [(0.100, 0.104)]
    assert [m.items for m in matches] == [("i1", "d1")]
    assert sync.queued("image") == [0.133]


def test_nothing_outside_slop_and_stale_items_are_dropped() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.005)
    sync.push("image", 1.00, "i1")
    sync.push("depth", 1.02, "d1")  # 20 ms apart: never a pair; image 1.00 can no longer match anything
    assert sync.queued("image") == [] and sync.queued("depth") == [1.02]
    assert sync.stats.dropped == {"image": 1, "depth": 0}
    assert sync.push("image", 1.021, "i2") == []  # depth 1.02 is the older one: a closer depth may come
    (match,) = sync.push("depth", 1.053, "d2")
    assert match.items == ("i2", "d1") and match.stamps == (1.021, 1.02)


def test_best_match_is_chosen_among_candidates() -> None:
    """Depth 2.00 is within slop of images 1.98, 2.00 and 2.02; the exact one wins, the older image drops."""
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.03)
    for stamp in (1.98, 2.00, 2.02):
        sync.push("image", stamp, f"i{stamp}")
    (match,) = sync.push("depth", 2.00, "d")
    assert match.stamps == (2.00, 2.00) and match.items == ("i2.0", "d")
    assert sync.queued("image") == [2.02]
    assert sync.stats.dropped["image"] == 1  # 1.98 lost its chance


def test_out_of_order_arrivals_are_sorted() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.001)
    sync.push("image", 3.0, "i3")
    sync.push("image", 2.0, "i2")  # late delivery of an older frame
    assert sync.queued("image") == [2.0, 3.0]
    assert _pairs(sync.push("depth", 2.0, "d2")) == [(2.0, 2.0)]
    assert _pairs(sync.push("depth", 3.0, "d3")) == [(3.0, 3.0)]
    # older than what depth already contributed: can never be used
    assert sync.push("depth", 2.5, "late") == []
    assert sync.stats.dropped["depth"] == 1


def test_one_push_can_complete_several_sets() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.002)
    sync.push("depth", 1.001, "d1")
    sync.push("depth", 2.0, "d2")
    assert sync.push("image", 1.0, "i1") == []  # a closer image could still come
    matches = sync.push("image", 2.0, "i2")  # settles (1.0, 1.001), and (2.0, 2.0) is exact
    assert _pairs(matches) == [(1.0, 1.001), (2.0, 2.0)]
    assert sync.stats.emitted == 2 and sync.stats.dropped == {"image": 0, "depth": 0}


def test_three_inputs() -> None:
    sync = ApproximateTimeSync(("image", "depth", "info"), slop_s=0.01)
    sync.push("image", 5.000, "i")
    sync.push("info", 5.000, "c")
    assert sync.push("depth", 5.003, "d") == []
    sync.push("image", 5.033, "i2")
    (match,) = sync.push("info", 5.033, "c2")
    assert match.names == ("image", "depth", "info") and match.items == ("i", "d", "c")


def test_queues_are_bounded_and_overflow_is_counted() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.01, queue_size=3)
    for i in range(10):
        sync.push("image", float(i), i)  # no depth ever arrives
    assert sync.queued("image") == [7.0, 8.0, 9.0]
    stats = sync.stats
    assert stats.received == {"image": 10, "depth": 0}
    assert stats.dropped == {"image": 7, "depth": 0}
    # once depth comes, matching resumes on what is left
    assert [m.items for m in sync.push("depth", 8.0, "d8")] == [(8, "d8")]
    assert sync.stats.dropped["image"] == 8  # 7.0 could no longer match
    assert [m.items for m in sync.push("depth", 9.0, "d9")] == [(9, "d9")]


def test_reset_forgets_queues_but_keeps_counts() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.0)
    sync.push("image", 10.0, "a")
    sync.push("depth", 10.0, "b")
    sync.push("image", 11.0, "c")
    sync.reset()
    assert sync.queued("image") == []
    assert sync.stats.dropped == {"image": 1, "depth": 0}
    # after a reset older stamps are accepted again
    sync.push("image", 1.0, "x")
    assert _pairs(sync.push("depth", 1.0, "y")) == [(1.0, 1.0)]
    assert sync.stats.emitted == 2 and sync.stats.received["image"] == 3


def test_time_jumping_back_restarts_matching() -> None:
    """A looping bag restarts its stamps: after a jump back of more than jump_back_s pairs flow again."""
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.0, jump_back_s=1.0)
    for t in (100.0, 100.5):
        sync.push("image", t, "i")
        sync.push("depth", t, "d")
    assert sync.push("image", 100.2, "late") == []  # small step back: a stale frame, dropped
    sync.push("image", 5.0, "i5")  # big step back: a restart
    assert _pairs(sync.push("depth", 5.0, "d5")) == [(5.0, 5.0)]
    assert sync.stats.emitted == 3


def test_concurrent_pushes_lose_nothing() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.0, queue_size=2000)
    results: list = []
    lock = threading.Lock()

    def feed(name: str) -> None:
        for i in range(500):
            out = sync.push(name, i * 0.01, (name, i))
            with lock:
                results.extend(out)

    threads = [threading.Thread(target=feed, args=(n,)) for n in ("image", "depth")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 500
    assert all(m.items[0][1] == m.items[1][1] for m in results)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ("image",), "slop_s": 0.1}, "at least two inputs"),
        ({"names": ("a", "a"), "slop_s": 0.1}, "unique"),
        ({"names": ("a", "b"), "slop_s": -0.1}, "non-negative"),
        ({"names": ("a", "b"), "slop_s": float("nan")}, "non-negative"),
        ({"names": ("a", "b"), "slop_s": 0.1, "queue_size": 0}, "queue_size"),
        ({"names": ("a", "b"), "slop_s": 0.1, "jump_back_s": 0.0}, "jump_back_s"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApproximateTimeSync(**kwargs)


def test_bad_pushes_are_rejected() -> None:
    sync = ApproximateTimeSync(("image", "depth"), slop_s=0.1)
    with pytest.raises(ValueError, match=r"unknown sync input 'rgb'; inputs are \['image', 'depth'\]"):
        sync.push("rgb", 1.0, None)
    with pytest.raises(ValueError, match="NaN"):
        sync.push("image", float("nan"), None)
    assert sync.stats.received == {"image": 0, "depth": 0}
