"""Hostile events on the real stack: each is one dead letter with its reason, every good
event around it is stored, and the service never stops (issue 11).

Each case was a way to stop the service for good before: a NUL the store refuses crashed
the store stage (and every restart after it), a key S3 answers with a 4xx was retried for
ever, and one notification of 11,000 records became 11,000 work items and 11 GB of dead
letters."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from ledger import read_all

pytestmark = [pytest.mark.faults]

POISON_PILL = (
    b'{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"photos"},'
    b'"object":{"key":"%00"}}}]}'
)


def _record(bucket: str, key: str, name: str = "ObjectCreated:Put") -> dict:
    return {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def _native(asset_id: str, uri: str | None = None) -> tuple[str, bytes]:
    return asset_id, json.dumps({"asset_id": asset_id, "uri": uri or asset_id}).encode()


def _hostile(bucket: str) -> list[tuple[str, bytes, str]]:
    """(ledger key, value, expected reason) of each hostile event."""
    long_id = "\U0001f600" * 2040  # 2,040 four-byte characters: 8,160 bytes
    dotdot = f"s3://{bucket}/img/../img/0.png"
    cases = [
        ("nul-removal", POISON_PILL, "unsupported_uri"),
        (*_native(long_id, f"s3://{bucket}/img/0.png"), "invalid_event"),
        (*_native(dotdot), "unsupported_uri"),
        (
            "long-key",
            json.dumps({"Records": [_record(bucket, "k" * 1500)]}).encode(),
            "unsupported_uri",
        ),
        (
            "surrogate",
            b'{"asset_id": "a\\ud800", "uri": "s3://' + bucket.encode() + b'/img/0.png"}',
            "invalid_event",
        ),
        (*_native(f"s3://{bucket}/img/\x01\x1b[2J.png"), "invalid_event"),
        (
            "control-key",
            json.dumps({"Records": [_record(bucket, "img/%07bell.png")]}).encode(),
            "unsupported_uri",
        ),
    ]
    many = json.dumps(  # just under the 1 MB event limit, as the 999,921 bytes
        {"Records": [_record("pix", str(i)) for i in range(11_000)]}, separators=(",", ":")
    ).encode()
    assert 900_000 < len(many) < 1_000_000
    cases.append(("eleven-thousand", many, "too_many_records"))
    # one message, ten records, four of them missing objects: one dead letter for the message
    partial = [_record(bucket, f"img/{i}.png") for i in range(6)]
    partial += [_record(bucket, f"missing/{i}.png") for i in range(4)]
    cases.append(("partial", json.dumps({"Records": partial}).encode(), "object_unavailable"))
    return cases


def test_hostile_events_are_dead_lettered_once_and_the_service_keeps_going(
    scenario, kafka_bootstrap
):
    ledger = scenario.ledger
    cases = _hostile(scenario.bucket)
    for i, (key, value, reason) in enumerate(cases):
        scenario.produce(15, prefix=f"good-{i}")
        ledger.produce([(key, value)], reason)
    scenario.produce(15, prefix="good-last")
    consumer = scenario.start()
    scenario.wait_lag_zero(300)
    assert consumer.alive(), scenario.tail()
    assert consumer.terminate() == 0, scenario.tail()

    figures = ledger.figures("hostile events", scenario.logs, None)
    assert (figures.lost, figures.duplicates) == (0, 0)
    assert ledger.wrong_dlq_reasons() == {}, scenario.tail()
    assert figures.dead_lettered == len(cases)
    assert figures.max_attempts == 1  # each bad event dead-lettered once, each good one stored once
    assert figures.stored == 15 * (len(cases) + 1)
    assert "critical" not in figures.extra, scenario.tail()

    dlq = read_all(kafka_bootstrap, scenario.dlq)
    [partial] = [r for r in dlq if r.key == b"partial"]
    headers = {k: v.decode() for k, v in partial.headers}
    listed = json.loads(headers["tagfleet-failed-records"])
    assert sorted(r["asset_id"] for r in listed) == [
        f"s3://{scenario.bucket}/missing/{i}.png" for i in range(4)
    ]
    assert "4 of 10 records failed" in headers["tagfleet-message"]
    with ledger._engine.connect() as conn:
        stored = {
            row[0]
            for row in conn.execute(
                sa.text("select asset_id from function_results where asset_id like 's3://%'")
            )
        }
    assert stored == {f"s3://{scenario.bucket}/img/{i}.png" for i in range(6)}

    many = next(value for key, value, _ in cases if key == "eleven-thousand")
    dead = [r for r in dlq if (r.key or b"") == b"eleven-thousand"]
    written = sum(
        len(r.value or b"") + len(r.key or b"") + sum(len(k) + len(v) for k, v in r.headers)
        for r in dead
    )
    print(f"11,000-record notification: {len(many)} bytes in, {written} bytes dead-lettered")
    assert len(dead) == 1 and written < 2 * len(many)


def test_a_store_error_nobody_anticipated_costs_one_item(scenario):
    """The store raises an unknown database error for one asset: that asset is dead-lettered
    (``store_rejected``), the rest of its batch is stored, the service keeps running."""
    ledger = scenario.ledger
    scenario.produce(40, prefix="before")
    ledger.produce(
        [_native("poison-asset", f"s3://{scenario.bucket}/{scenario.objects[0]}")],
        "store_rejected",
    )
    scenario.produce(40, prefix="after")
    consumer = scenario.start(failpoints="store=raise~poison", batch_size=32)
    scenario.wait_lag_zero(240)
    assert consumer.alive(), scenario.tail()
    assert consumer.terminate() == 0, scenario.tail()
    figures = ledger.figures("store rejects one item", scenario.logs, None)
    assert (figures.lost, figures.duplicates) == (0, 0)
    assert ledger.wrong_dlq_reasons() == {}, scenario.tail()
    assert (figures.stored, figures.dead_lettered) == (80, 1)
    assert figures.extra.get("raise@store", 0) >= 1  # the failpoint did fire
    assert "critical" not in figures.extra
