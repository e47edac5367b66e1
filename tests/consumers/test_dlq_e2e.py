"""``tagfleet dlq list`` and ``dlq redrive`` on the real stack: 20 events dead-lettered for
objects not uploaded yet; once uploaded, one redrive stores all 20 once, and a second redrive
is refused."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    image_bytes,
    native_event,
    produce,
    read_topic,
    wait_until,
)
from kafka import KafkaConsumer, TopicPartition

from consumers.cli import main

pytestmark = pytest.mark.integration


def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    total = sum(consumer.end_offsets(parts).values())
    consumer.close()
    return total


def _stored(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assets = conn.execute(sa.text("select count(*) from assets")).scalar_one()
        dup = conn.execute(
            sa.text(
                "select count(*) from (select asset_id, function from function_results"
                " group by asset_id, function having count(*) > 1) d"
            )
        ).scalar_one()
    engine.dispose()
    return assets, dup


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


def test_redrive_of_fixed_dead_letters_stores_each_once_and_refuses_a_second_redrive(
    stack,
    kafka_bootstrap,
    new_topic,
    new_bucket,
    s3,
    pg_url,
    fleet_path,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    bucket = new_bucket()
    keys = [f"late/{i:02d}.png" for i in range(20)]
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    produce(kafka_bootstrap, topic, [native_event(bucket, key) for key in keys])
    consumer = ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        metrics_port=free_port(),
        batch_size=8,
    )
    try:
        assert len(read_topic(kafka_bootstrap, dlq, expected=20, timeout_s=120)) == 20
        for name, value in (
            ("TAGFLEET_BOOTSTRAP_SERVERS", kafka_bootstrap),
            ("TAGFLEET_TOPIC", topic),
            ("TAGFLEET_DLQ_TOPIC", dlq),
        ):
            monkeypatch.setenv(name, value)
        code, listing, _ = _cli(["dlq", "list", "--json-output", "--samples", "2"], capsys)
        assert code == 0
        assert [(r["reason"], r["count"]) for r in listing["reasons"]] == [
            ("object_unavailable", 20)
        ]
        assert len(listing["reasons"][0]["samples"]) == 2

        for i, key in enumerate(keys):  # the cause, fixed
            s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i))
        code, done, err = _cli(["dlq", "redrive", "--reason", "object_unavailable"], capsys)
        assert (code, done["redriven"], done["refused"]) == (0, 20, 0), err
        wait_until(lambda: _stored(pg_url)[0] == 20, 120, what="20 assets stored")
        events = read_topic(kafka_bootstrap, results, expected=20)
        redriven = read_topic(kafka_bootstrap, topic, expected=40)

        before = _end_offsets(kafka_bootstrap, topic)
        code, again, err = _cli(["dlq", "redrive", "--reason", "object_unavailable"], capsys)
        assert (code, again["redriven"], again["refused"]) == (1, 0, 20)
        assert err.count("already redriven") == 20
        assert _end_offsets(kafka_bootstrap, topic) == before  # nothing sent
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    assert _stored(pg_url) == (20, 0)
    assert Counter(r.key.decode() for r in events) == {f"s3://{bucket}/{k}": 1 for k in keys}
    assert len(read_topic(kafka_bootstrap, dlq, expected=20)) == 20  # no new dead letters
    marks = [dict(r.headers) for r in redriven if r.headers]
    assert len(marks) == 20 and all(m["tagfleet-redrives"] == b"1" for m in marks)


def test_a_dead_letter_topic_that_does_not_exist_is_one_line(
    stack, kafka_bootstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGFLEET_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TAGFLEET_DLQ_TOPIC", "no-such-dlq-topic")
    with pytest.raises(SystemExit, match="topic no-such-dlq-topic does not exist"):
        main(["dlq", "list"])
