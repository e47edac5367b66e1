"""The Kafka adapter against the real broker: kafka-python behaviour the loop depends on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.source import release_parked_records

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
