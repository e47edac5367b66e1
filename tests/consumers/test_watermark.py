"""Property and example tests of the per-partition offset watermark."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.watermark import PartitionWatermark, Watermarks


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]]]:
    """Increasing offsets with gaps, and an interleaving of their tracks and completions."""
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=60))
    start = draw(st.integers(0, 1000))
    offsets = [start + sum(gaps[: i + 1]) - gaps[0] for i in range(len(gaps))]
    finish_order = draw(st.permutations(offsets))
    steps: list[tuple[str, int]] = []
    tracked = 0
    pending = list(finish_order)
    while tracked < len(offsets) or pending:
        tracked_set = set(offsets[:tracked])
        doable = [o for o in pending if o in tracked_set]
        if tracked < len(offsets) and (not doable or draw(st.booleans())):
            steps.append(("track", offsets[tracked]))
            tracked += 1
        else:
            offset = doable[0]
            pending.remove(offset)
            steps.append(("done", offset))
        if draw(st.booleans()):
            steps.append(("commit", -1))
    return offsets, steps


@settings(max_examples=300, deadline=None)
@given(runs())
def test_commit_never_passes_unfinished_and_reaches_end(run: tuple[list[int], list]) -> None:
    offsets, steps = run
    wm = PartitionWatermark()
    unfinished: set[int] = set()
    committed: list[int] = []
    for action, offset in steps:
        if action == "track":
            wm.track(offset)
            unfinished.add(offset)
        elif action == "done":
            assert wm.done(offset)
            unfinished.discard(offset)
        else:
            value = wm.commit_offset()
            if value is not None:
                assert all(value <= o for o in unfinished)
                committed.append(value)
        assert wm.in_flight == len(unfinished)
    final = wm.commit_offset()
    if final is not None:
        committed.append(final)
    assert committed == sorted(set(committed))
    assert committed[-1] == offsets[-1] + 1
    assert wm.commit_offset() is None


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2000), st.data())
def test_memory_is_bounded_by_unfinished(n: int, data: st.DataObject) -> None:
    wm = PartitionWatermark()
    stuck = data.draw(st.integers(0, n - 1))
    for offset in range(n):
        wm.track(offset)
        if offset != stuck:
            wm.done(offset)
    assert wm.in_flight == 1
    assert len(wm._heap) <= 2 * wm.in_flight + 17
    assert wm.commit_offset() == stuck


def test_nothing_tracked_commits_nothing() -> None:
    assert PartitionWatermark().commit_offset() is None


def test_out_of_order_completion_holds_the_watermark() -> None:
    wm = PartitionWatermark()
    for offset in (10, 11, 14):
        wm.track(offset)
    wm.done(14)
    wm.done(11)
    assert wm.commit_offset() == 10
    assert wm.commit_offset() is None
    wm.done(10)
    assert wm.commit_offset() == 15


def test_tracking_must_increase() -> None:
    wm = PartitionWatermark()
    wm.track(5)
    with pytest.raises(ValueError):
        wm.track(5)
    with pytest.raises(ValueError):
        wm.track(3)


def test_unknown_and_repeated_completions_are_ignored() -> None:
    wm = PartitionWatermark()
    wm.track(1)
    assert wm.done(1)
    assert not wm.done(1)
    assert not wm.done(7)
    assert wm.commit_offset() == 2


def test_failed_commit_is_offered_again() -> None:
    wm = PartitionWatermark()
    wm.track(0)
    wm.done(0)
    assert wm.commit_offset() == 1
    wm.commit_failed(1)
    assert wm.commit_offset() == 1


def test_reset_forgets_in_flight_work() -> None:
    wm = PartitionWatermark()
    wm.track(3)
    wm.reset()
    assert not wm.done(3)
    assert wm.commit_offset() is None
    wm.track(0)
    wm.done(0)
    assert wm.commit_offset() == 1


def test_watermarks_per_partition() -> None:
    marks: Watermarks[tuple[str, int]] = Watermarks()
    a, b = ("assets", 0), ("assets", 1)
    marks.track(a, 0)
    marks.track(a, 1)
    marks.track(b, 7)
    marks.done(a, 1)
    marks.done(b, 7)
    assert marks.in_flight() == 1
    assert marks.commit_offsets() == {a: 0, b: 8}
    assert marks.commit_offsets() == {}
    marks.revoke([a])
    assert a not in marks
    assert not marks.done(a, 0)
    offsets = {b: 8}
    marks.commit_failed(offsets)
    assert marks.commit_offsets() == offsets
