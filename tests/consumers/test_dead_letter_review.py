"""What ``dlq list`` shows and what ``dlq redrive`` may send (pure logic; the real-stack
redrive is tests/consumers/test_dlq_e2e.py)."""

from __future__ import annotations

from consumers.dead_letter_review import (
    DeadLetter,
    LedgerEntry,
    plan_redrive,
    reasons_table,
    redrive_headers,
    summarise,
)


def letter(
    offset: int,
    reason: str,
    source_offset: int,
    at_ms: int = 1000,
    extra: dict[str, str] | None = None,
) -> DeadLetter:
    headers = {
        "tagfleet-reason": reason,
        "tagfleet-message": f"m{offset}",
        "tagfleet-source-topic": "assets",
        "tagfleet-source-partition": "0",
        "tagfleet-source-offset": str(source_offset),
        "tagfleet-asset-id": f"s3://photos/{offset}.jpg",
        **(extra or {}),
    }
    return DeadLetter("assets.dlq", 0, offset, at_ms, b"k", b"{}", headers)


def test_summary_counts_by_reason_with_samples_most_frequent_first() -> None:
    letters = [letter(i, "object_unavailable", i, at_ms=100 + i) for i in range(5)]
    letters += [letter(9, "invalid_json", 9)]
    first, second = summarise(letters, samples=2)
    assert (first.reason, first.count, len(first.samples)) == ("object_unavailable", 5, 2)
    assert (first.first_ms, first.last_ms) == (100, 104)
    assert (second.reason, second.count) == ("invalid_json", 1)
    table = reasons_table([first, second])
    assert "object_unavailable        5" in table and "total" in table


def test_redrive_takes_one_reason_since_a_time_back_to_its_source_topic() -> None:
    letters = [letter(1, "object_unavailable", 10, at_ms=1000)]
    letters += [letter(2, "object_unavailable", 11, at_ms=5000)]
    letters += [letter(3, "invalid_json", 12, at_ms=5000)]
    plan = plan_redrive(letters, [], "object_unavailable", since_ms=2000)
    assert [(r.letter.offset, r.topic, r.redrives) for r in plan.send] == [(2, "assets", 1)]
    assert not plan.refused
    assert dict(redrive_headers(plan.send[0])) == {
        "tagfleet-redrive-of": b"assets.dlq:0:2",
        "tagfleet-redrives": b"1",
    }


def test_a_dead_letter_redriven_once_is_refused_unless_forced() -> None:
    letters = [letter(1, "object_unavailable", 10)]
    ledger = [LedgerEntry("assets.dlq:0:1", "assets:3:40", 1)]
    plan = plan_redrive(letters, ledger, "object_unavailable")
    assert not plan.send and "already redriven (to assets:3:40)" in plan.refused[0][1]
    forced = plan_redrive(letters, ledger, "object_unavailable", force=True)
    assert [r.redrives for r in forced.send] == [2]


def test_an_event_that_failed_again_after_its_redrive_is_refused_unless_forced() -> None:
    # the redriven copy went to assets:0:40 and was dead-lettered again as dlq offset 7
    again = letter(7, "object_unavailable", 40)
    ledger = [LedgerEntry("assets.dlq:0:1", "assets:0:40", 1)]
    plan = plan_redrive([again], ledger, "object_unavailable")
    assert not plan.send and "failed again after redrive number 1" in plan.refused[0][1]
    forced = plan_redrive([again], ledger, "object_unavailable", force=True)
    assert [r.redrives for r in forced.send] == [2]


def test_a_dead_letter_without_its_value_cannot_go_back() -> None:
    dropped = letter(1, "event_too_large", 10, extra={"tagfleet-value-dropped": "2000000 bytes"})
    plan = plan_redrive([dropped], [], "event_too_large", force=True)
    assert not plan.send and "too large to keep" in plan.refused[0][1]


def test_ledger_entries_round_trip() -> None:
    entry = LedgerEntry("assets.dlq:0:1", "assets:3:40", 2)
    assert LedgerEntry.decode(entry.encode()) == entry


def test_an_event_dead_lettered_twice_goes_back_once() -> None:
    # a crash between the dead letter and the commit: the same input record, two dead letters
    twins = [letter(1, "object_unavailable", 10), letter(2, "object_unavailable", 10)]
    plan = plan_redrive(twins, [], "object_unavailable")
    assert [r.letter.offset for r in plan.send] == [1]
    assert plan.refused[0][0].offset == 2 and "sent once" in plan.refused[0][1]
