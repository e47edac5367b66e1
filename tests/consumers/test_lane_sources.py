"""Both Kafka adapters subscribe to the two lanes' topics and pause one lane's partitions
alone (Source.pause_topics), against the real broker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.confluent_source import ConfluentSource
from consumers.ports import PolledRecord, Source
from consumers.settings import Settings
from consumers.source import KafkaSource

pytestmark = pytest.mark.integration

PER_TOPIC = 12


def _fill(bootstrap: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(PER_TOPIC):
        producer.send(topic, f"{topic}-{i}".encode(), partition=i % 2)
    producer.flush()
    producer.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_the_backfill_lane_is_held_while_the_upload_lane_is_served(
    kafka_bootstrap: str, new_topic: Any, client: str
) -> None:
    uploads, backfill = new_topic(partitions=2), new_topic(partitions=2)
    _fill(kafka_bootstrap, uploads)
    _fill(kafka_bootstrap, backfill)
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic=uploads,
        backfill_topic=backfill,
        group_id=f"g-{uploads}",
        results_topic="",
        max_poll_records=5,
        kafka_client=client,  # type: ignore[arg-type]
    )
    assert settings.input_topics() == [uploads, backfill]
    source: Source = ConfluentSource(settings) if client == "confluent" else KafkaSource(settings)
    got: list[PolledRecord] = []
    try:
        deadline = time.monotonic() + 60
        # held from before the assignment: the backfill partitions start paused
        while len([r for r in got if r.topic == uploads]) < PER_TOPIC:
            assert time.monotonic() < deadline, "the upload lane was not served"
            assert source.pause_topics([backfill]) in (0, 2)
            got.extend(source.poll(500))
        for _ in range(3):  # and stay paused while uploads are served
            source.pause_topics([backfill])
            got.extend(source.poll(300))
        assert {r.topic for r in got} == {uploads}
        assert source.pause_topics([backfill]) == 2
        assert {p.topic for p in source.assignment()} == {uploads, backfill}
        while len(got) < 2 * PER_TOPIC:  # released: the backfill lane comes, from its start
            assert time.monotonic() < deadline, "the backfill lane did not resume"
            assert source.pause_topics([]) == 0
            got.extend(source.poll(500))
        held = sorted(r.value for r in got if r.topic == backfill)  # type: ignore[type-var]
        assert held == sorted(f"{backfill}-{i}".encode() for i in range(PER_TOPIC))
        assert source.set_paused(True) == 4  # every lane
    finally:
        source.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_backfill_records_handed_back_then_held_come_again(
    kafka_bootstrap: str, new_topic: Any, client: str
) -> None:
    """The loop's hand-back: backfill records past the lane's allowance are rewound, the lane
    is paused for the uploads, and released later: every handed-back record comes again (none
    skipped: the commits would pass it)."""
    uploads, backfill = new_topic(partitions=2), new_topic(partitions=2)
    _fill(kafka_bootstrap, backfill)
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic=uploads,
        backfill_topic=backfill,
        group_id=f"g-{backfill}",
        results_topic="",
        max_poll_records=5,
        kafka_client=client,  # type: ignore[arg-type]
    )
    source: Source = ConfluentSource(settings) if client == "confluent" else KafkaSource(settings)
    taken: list[PolledRecord] = []
    try:
        deadline = time.monotonic() + 60
        first: list[PolledRecord] = []
        while len(first) < 2:
            assert time.monotonic() < deadline, "no backfill records came"
            source.pause_topics([])
            first += [r for r in source.poll(500) if r.topic == backfill]
        taken, handed_back = first[:1], first[1:]  # an allowance of one
        assert handed_back
        source.rewind(handed_back)
        for _ in range(3):  # held for the upload lane a while
            source.pause_topics([backfill])
            assert source.poll(300) == []
        got = list(taken)
        while len(got) < PER_TOPIC:
            assert time.monotonic() < deadline, f"lost: {PER_TOPIC - len(got)} records"
            source.pause_topics([])
            got.extend(source.poll(500))
        values = sorted(r.value for r in got)  # type: ignore[type-var]
        assert values == sorted(f"{backfill}-{i}".encode() for i in range(PER_TOPIC))
    finally:
        source.close()
