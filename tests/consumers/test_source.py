"""The Kafka adapter against the real broker: kafka-python behaviour the loop depends on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from consumers.source import await_metadata_snapshot, release_parked_records

pytestmark = pytest.mark.integration


def _resumed_partition_delivers_again(
    bootstrap: str, topic: str, after_poll: Callable[[KafkaConsumer], None]
) -> bool:
    """Partition 0 is paused mid-batch (records buffered) while partition 1 flows, then
    resumed: True when partition 0 delivers records again."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        max_poll_records=5,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    got = {0: 0, 1: 0}

    def poll(times: int) -> None:
        for _ in range(times):
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp.partition] += len(records)
            after_poll(consumer)

    try:
        consumer.assign([p0, p1])
        consumer.pause(p1)
        poll(3)
        assert 0 < got[0] < 50, got  # partition 0 read part of what was fetched
        consumer.pause(p0)
        consumer.resume(p1)
        poll(6)
        assert got[1] > 0, got  # partition 1 flowed while partition 0 was parked
        consumer.resume(p0)
        before = got[0]
        poll(20)
        return got[0] > before
    finally:
        consumer.close()


@pytest.fixture
def two_partitions(kafka_bootstrap: str, new_topic: Any) -> str:
    topic = new_topic(partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for partition in (0, 1):
        for i in range(50):
            producer.send(topic, f"{partition}-{i}".encode(), partition=partition)
    producer.flush()
    producer.close()
    return topic


def test_a_partition_paused_mid_batch_delivers_again_after_resume(
    kafka_bootstrap: str, two_partitions: str
) -> None:
    assert _resumed_partition_delivers_again(
        kafka_bootstrap, two_partitions, release_parked_records
    )


def test_kafka_python_still_needs_the_parked_records_workaround(
    kafka_bootstrap: str, two_partitions: str
) -> None:
    """A canary: when this fails, kafka-python fixed the bug and release_parked_records (and
    the exact pin in pyproject.toml) can go."""
    assert not _resumed_partition_delivers_again(kafka_bootstrap, two_partitions, lambda c: None)


def _rebalances_after_start(
    bootstrap: str, topic: str, before_poll: Callable[[KafkaConsumer], object]
) -> list[str]:
    """Subscribe a fresh group consumer, run ``before_poll``, poll for 4 s: the listener's
    callbacks in order ("revoked 0", "assigned 3", ...)."""
    calls: list[str] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            calls.append(f"revoked {len(revoked)}")

        def on_partitions_assigned(self, assigned: Any) -> None:
            calls.append(f"assigned {len(assigned)}")

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"g-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.subscribe([topic], listener=Listener())
        before_poll(consumer)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        return list(calls)  # before close(), which revokes
    finally:
        consumer.close()


def test_a_new_member_is_assigned_once_when_it_waits_for_the_metadata_snapshot(
    kafka_bootstrap: str, two_partitions: str
) -> None:
    calls = _rebalances_after_start(
        kafka_bootstrap, two_partitions, lambda c: await_metadata_snapshot(c, two_partitions)
    )
    assert calls == ["revoked 0", "assigned 2"]


def test_kafka_python_still_rebalances_twice_without_the_metadata_wait(
    kafka_bootstrap: str, two_partitions: str
) -> None:
    """A canary: when this fails, kafka-python builds its snapshot before the first join and
    await_metadata_snapshot can go."""
    calls = _rebalances_after_start(kafka_bootstrap, two_partitions, lambda c: None)
    assert [c for c in calls if c.startswith("assigned")][-1] == "assigned 2", calls
    assert sum(c.startswith("assigned") for c in calls) == 2, calls
