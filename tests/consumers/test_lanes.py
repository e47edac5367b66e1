"""The priority lanes' policy (consumers.lanes): pure logic, no broker."""

from __future__ import annotations

import pytest

from consumers.lanes import BACKFILL, UPLOAD, LaneLimits, LanePolicy, present_lanes


def policy(cap: int = 8, share: float = 0.1, quiet_s: float = 0.5, window: int = 100) -> LanePolicy:
    return LanePolicy(
        LaneLimits(backfill_max_in_flight=cap, min_share=share, quiet_s=quiet_s, window=window)
    )


def test_backfill_takes_the_room_its_bound_leaves_while_uploads_are_quiet():
    lanes = policy(cap=8)
    assert lanes.backfill_allowance(upload_in_flight=0, backfill_in_flight=0, now=10.0) == 8
    assert lanes.backfill_allowance(upload_in_flight=0, backfill_in_flight=5, now=10.0) == 3
    assert lanes.backfill_allowance(upload_in_flight=0, backfill_in_flight=8, now=10.0) == 0
    assert lanes.backfill_allowance(upload_in_flight=0, backfill_in_flight=30, now=10.0) == 0


def test_backfill_pauses_while_an_upload_is_in_flight_and_resumes_when_it_is_done():
    lanes = policy(cap=8, share=0.1, quiet_s=0.0)
    lanes.note_dispatched(BACKFILL, 8, now=1.0)  # backfill ran alone until now
    assert lanes.backfill_allowance(upload_in_flight=1, backfill_in_flight=2, now=2.0) == 0
    assert lanes.backfill_allowance(upload_in_flight=0, backfill_in_flight=2, now=2.0) == 6


def test_uploads_stay_busy_for_the_quiet_period_after_the_last_one_taken():
    lanes = policy(cap=8, share=0.0, quiet_s=0.5)
    lanes.note_dispatched(UPLOAD, 1, now=10.0)
    assert lanes.uploads_busy(0, now=10.2)
    assert lanes.backfill_allowance(0, 0, now=10.2) == 0
    assert not lanes.uploads_busy(0, now=10.6)
    assert lanes.backfill_allowance(0, 0, now=10.6) == 8


def test_a_steady_stream_of_uploads_leaves_backfill_its_minimum_share():
    """Uploads always busy: the loop takes what the policy allows, one dispatch at a time;
    backfill ends with at least its share of the window, never much more."""
    lanes = policy(cap=8, share=0.2, quiet_s=1.0, window=50)
    taken = {UPLOAD: 0, BACKFILL: 0}
    for step in range(1000):
        now = step * 0.01
        lanes.note_dispatched(UPLOAD, 1, now)
        taken[UPLOAD] += 1
        allowance = lanes.backfill_allowance(upload_in_flight=1, backfill_in_flight=0, now=now)
        lanes.note_dispatched(BACKFILL, allowance, now)
        taken[BACKFILL] += allowance
        assert lanes.backfill_share() >= 0.2 - 1e-9 or step < 5
    share = taken[BACKFILL] / (taken[UPLOAD] + taken[BACKFILL])
    assert 0.19 <= share <= 0.26
    assert lanes.backfill_allowance(upload_in_flight=1, backfill_in_flight=8, now=99.0) == 0


def test_without_a_minimum_share_busy_uploads_hold_backfill_entirely():
    lanes = policy(share=0.0)
    lanes.note_dispatched(UPLOAD, 100, now=1.0)
    assert lanes.backfill_allowance(upload_in_flight=3, backfill_in_flight=0, now=1.0) == 0


def test_a_full_share_gives_backfill_its_room_even_while_uploads_are_busy():
    lanes = policy(cap=4, share=1.0)
    lanes.note_dispatched(UPLOAD, 10, now=1.0)
    assert lanes.backfill_allowance(upload_in_flight=3, backfill_in_flight=1, now=1.0) == 3


def test_the_window_forgets_old_dispatches():
    lanes = policy(share=0.5, window=4)
    lanes.note_dispatched(BACKFILL, 4, now=0.0)
    assert lanes.backfill_share() == 1.0
    lanes.note_dispatched(UPLOAD, 3, now=0.0)
    assert lanes.backfill_share() == 0.25
    assert lanes.backfill_allowance(upload_in_flight=1, backfill_in_flight=0, now=0.0) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backfill_max_in_flight": 0, "min_share": 0.1, "quiet_s": 0.0},
        {"backfill_max_in_flight": 1, "min_share": 1.5, "quiet_s": 0.0},
        {"backfill_max_in_flight": 1, "min_share": 0.1, "quiet_s": -1.0},
    ],
)
def test_limits_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        LaneLimits(**kwargs)


def test_an_unknown_lane_is_refused():
    with pytest.raises(ValueError, match="unknown lane"):
        policy().note_dispatched("express", 1, now=0.0)


def test_the_backfill_topic_is_subscribed_only_when_the_cluster_has_it():
    assert present_lanes(["assets", "assets.backfill"], {"assets", "assets.backfill"}) == [
        "assets",
        "assets.backfill",
    ]
    assert present_lanes(["assets", "assets.backfill"], {"assets"}) == ["assets"]
    assert present_lanes(["assets"], set()) == ["assets"]  # the upload lane whatever the cluster
