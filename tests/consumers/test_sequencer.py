"""Order keys of notification records (consumers.sequencer): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.events import EventPolicy, parse_event
from consumers.sequencer import WIDTH, is_older, order_key

FIXTURES = Path(__file__).parent / "fixtures"
T = datetime(2026, 12, 6, 3, 32, 46, tzinfo=UTC)


def _aws(sequencer: str) -> str:
    key = order_key(sequencer, versitygw=False, event_time=None)
    assert key is not None and len(key) == WIDTH
    return key


def _gw(sequencer: str, at: datetime = T) -> str:
    key = order_key(sequencer, versitygw=True, event_time=at)
    assert key is not None and len(key) == WIDTH
    return key


def test_aws_sequencers_compare_right_padded() -> None:
    """The Amazon S3 User Guide: "first right pad the shorter value with zeros, and then do a
    lexicographical comparison" (a longer sequencer that extends a shorter one is later)."""
    assert _aws("0055AED6DCD90281E5") < _aws("0055AED6DCD90281E6")
    assert _aws("0055AED6DCD90281E5") < _aws("0055AED6DCD90281E501")
    assert _aws("0055AED6DCD90281E") < _aws("0055AED6DCD90281E5")
    # right-padded, "1" is "10...": a left-padding reader would order these the other way
    assert _aws("1") > _aws("0F")
    assert _aws("0055aed6dcd90281e5") == _aws("0055AED6DCD90281E5")


def test_versitygw_counters_compare_as_numbers_within_a_second() -> None:
    """The gateway's counter has no padding: 9 < A < 10 < FF as numbers, not as strings."""
    keys = [_gw(s) for s in ("1", "9", "A", "10", "FF", "100")]
    assert keys == sorted(keys)


def test_versitygw_restart_starts_a_later_second() -> None:
    """After a restart the counter is back at 1, but the event time has moved on."""
    before_restart = _gw("FFFF", T)
    assert _gw("1", T + timedelta(seconds=1)) > before_restart
    assert _gw("2", T) < before_restart


@pytest.mark.parametrize(
    ("sequencer", "versitygw", "at"),
    [
        (None, False, None),
        ("", False, None),
        ("not-hex", False, None),
        ("0" * 65, False, None),
        ("1", True, None),  # the gateway's counter needs the event time
        ("1" * 17, True, T),  # more than a 64-bit counter
    ],
)
def test_no_key_without_a_usable_sequencer(
    sequencer: str | None, versitygw: bool, at: datetime | None
) -> None:
    assert order_key(sequencer, versitygw=versitygw, event_time=at) is None


def test_unordered_and_equal_events_are_never_older() -> None:
    assert not is_older(None, _aws("1")) and not is_older(_aws("1"), None)
    assert not is_older(_aws("1"), _aws("1"))
    assert is_older(_aws("1"), _aws("2"))


@pytest.mark.parametrize("server", ["aws", "minio", "versitygw"])
def test_each_servers_records_carry_their_order(server: str) -> None:
    """The put, overwrite and delete of the same key, as each server sends them, are in that
    order by their keys (the recorded gateway records and the documented AWS/MinIO ones)."""
    events = []
    for case in ("put-space-plus-accent", "overwrite", "delete"):
        value = (FIXTURES / server / f"{case}.json").read_bytes()
        [item] = parse_event(value, None, EventPolicy())
        events.append(item)
    assert len({e.asset_id for e in events}) == 1
    keys = [e.sequencer or "" for e in events]
    assert "" not in keys and keys == sorted(keys) and len(set(keys)) == 3
