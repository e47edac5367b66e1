"""The confluent-kafka (librdkafka) adapters against the real broker: the same events, pauses,
positions and commits the loop relies on with kafka-python, and the same settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import read_topic
from kafka import KafkaProducer

from consumers.confluent_config import librdkafka_config
from consumers.confluent_sinks import ConfluentProducer
from consumers.confluent_source import ConfluentSource
from consumers.ports import Partition, PolledRecord, RecordRejected
from consumers.settings import KafkaSettings, Settings
from consumers.sinks import OutRecord

PER_PARTITION = 20


@pytest.fixture
def four_partitions(kafka_bootstrap: str, new_topic: Any) -> str:
    topic = new_topic(partitions=4)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for partition in range(4):
        for i in range(PER_PARTITION):
            producer.send(topic, f"{partition}-{i}".encode(), partition=partition)
    producer.flush()
    producer.close()
    return topic


def _source(bootstrap: str, topic: str, **extra: Any) -> ConfluentSource:
    return ConfluentSource(
        Settings(
            bootstrap_servers=bootstrap,
            topic=topic,
            group_id=f"g-{topic}",
            results_topic="",
            max_poll_records=5,
            kafka_client="confluent",
            **extra,
        )
    )


def _poll_until(
    sources: list[ConfluentSource],
    done: Callable[[], bool],
    paused: bool = False,
    timeout_s: float = 60,
    into: list[PolledRecord] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the group did not settle"
        for source in sources:
            source.set_paused(paused)
            records = source.poll(100)
            if into is not None and source is sources[0]:
                into.extend(records)


def test_a_member_is_assigned_once_reads_everything_and_commits(
    kafka_bootstrap: str, four_partitions: str, kafka_admin: Any
) -> None:
    source = _source(kafka_bootstrap, four_partitions)
    got: list[PolledRecord] = []
    try:
        _poll_until([source], lambda: len(got) == 4 * PER_PARTITION, into=got)
        events = source.take_rebalance_events()
        assert [(e.kind, len(e.partitions)) for e in events] == [("assigned", 4)]
        assert source.joined
        assert source.commit({Partition(four_partitions, p): 7 for p in range(4)})
        sevens = {Partition(four_partitions, p): 7 for p in range(4)}
        # the probe answers on its own thread, asked by end_offsets() at most every 5 s
        _poll_until(
            [source], lambda: bool(source.end_offsets()) and source.committed_offsets() == sevens
        )
        assert source.end_offsets() == {
            Partition(four_partitions, p): PER_PARTITION for p in range(4)
        }
    finally:
        source.close()
    committed = kafka_admin.list_group_offsets(f"g-{four_partitions}")[f"g-{four_partitions}"]
    assert sorted(m.offset for m in committed.values()) == [7, 7, 7, 7]
    record = got[0]
    assert record.value is not None and record.timestamp is not None and record.key is None


def test_partitions_assigned_to_a_saturated_member_are_paused_before_any_fetch(
    kafka_bootstrap: str, four_partitions: str
) -> None:
    """The loop pauses everything before each poll while saturated; a member saturated before
    its assignment must take nothing of what it is given (on_assign pauses it), and resuming
    hands everything out."""
    source = _source(kafka_bootstrap, four_partitions)
    handed: list[PolledRecord] = []
    try:
        deadline = time.monotonic() + 60
        while not source.joined:
            assert time.monotonic() < deadline, "not assigned"
            source.set_paused(True)
            handed.extend(source.poll(1000))  # long: a fetch fits in the assigning poll
        for _ in range(3):
            source.set_paused(True)
            handed.extend(source.poll(1000))
        assert handed == []
        assert source.set_paused(True) == 4
        _poll_until([source], lambda: len(handed) == 4 * PER_PARTITION, into=handed)
    finally:
        source.close()


def test_a_partition_revoked_and_assigned_back_goes_on_from_its_position(
    kafka_bootstrap: str, four_partitions: str
) -> None:
    """kafka-python keeps the position of a partition revoked and assigned back in one eager
    rebalance, and the loop keeps its watermark: nothing read before may come again, though
    nothing was committed. librdkafka would restart it from the commit."""
    first = _source(kafka_bootstrap, four_partitions)
    seen: list[PolledRecord] = []
    second = None
    try:
        _poll_until([first], lambda: len(seen) >= 10, into=seen)
        first.take_rebalance_events()
        second = _source(kafka_bootstrap, four_partitions)
        _poll_until(
            [first, second],
            lambda: second is not None and len(first.assignment()) == 2 == len(second.assignment()),
            into=seen,
        )
        kinds = [e.kind for e in first.take_rebalance_events()]
        assert kinds and kinds == ["revoked", "assigned"] * (len(kinds) // 2)  # eager, no loss
        kept = first.assignment()
        _poll_until(
            [first, second],
            lambda: sum(Partition(r.topic, r.partition) in kept for r in seen) >= 2 * PER_PARTITION,
            into=seen,
        )
    finally:
        if second is not None:
            second.close()
        first.close()
    mine = [(r.partition, r.offset) for r in seen if Partition(r.topic, r.partition) in kept]
    assert len(mine) == len(set(mine)) == 2 * PER_PARTITION


def test_a_rewound_record_comes_again(kafka_bootstrap: str, four_partitions: str) -> None:
    source = _source(kafka_bootstrap, four_partitions)
    got: list[PolledRecord] = []
    try:
        _poll_until([source], lambda: len(got) > 0, into=got)
        assert source.rewind(got) == len({r.partition for r in got})
        again: list[PolledRecord] = []
        wanted = {(r.partition, r.offset) for r in got}
        _poll_until(
            [source], lambda: wanted <= {(r.partition, r.offset) for r in again}, into=again
        )
    finally:
        source.close()


def test_the_producer_names_a_refused_record_and_delivers_the_others(
    kafka_bootstrap: str, new_topic: Any
) -> None:
    topic = new_topic(partitions=1)
    producer = ConfluentProducer({"bootstrap_servers": [kafka_bootstrap]})
    records = [
        OutRecord(topic, b"a", b"small", [("h", b"1")]),
        OutRecord(topic, b"b", b"x" * 2_000_000),  # over the 1 MiB request limit
        OutRecord(topic, b"c", b"small too"),
    ]
    try:
        with pytest.raises(RecordRejected) as info:
            producer.send_all(records)
        assert info.value.refused == (1,)
    finally:
        producer.close()
    got = read_topic(kafka_bootstrap, topic, expected=2, timeout_s=30)
    assert sorted(r.key for r in got) == [b"a", b"c"]
    assert [h for r in got if r.key == b"a" for h in r.headers] == [("h", b"1")]


def test_kafka_settings_map_to_librdkafka_names() -> None:
    settings = KafkaSettings(
        bootstrap_servers="a:1,b:2",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="u",
        sasl_plain_password="p",
        ssl_cafile="/ca.pem",
        ssl_certfile="/cert.pem",
        ssl_keyfile="/key.pem",
    )
    assert librdkafka_config(settings.kafka_common()) == {
        "bootstrap.servers": "a:1,b:2",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/cert.pem",
        "ssl.key.location": "/key.pem",
    }
    with pytest.raises(ValueError, match="ssl_crlfile"):
        librdkafka_config({"ssl_crlfile": "/crl.pem"})


def _round_trip(common: dict[str, Any], new_topic: Any, kafka_bootstrap: str) -> None:
    """A record produced and consumed by the confluent adapters over ``common``'s listener."""
    topic = new_topic(partitions=1)
    settings = Settings(
        **common, topic=topic, group_id=f"g-{topic}", results_topic="", kafka_client="confluent"
    )
    producer = ConfluentProducer(settings.kafka_common())
    try:
        producer.send_all([OutRecord(topic, b"k", b"over the listener")])
    finally:
        producer.close()
    source = ConfluentSource(settings)
    got: list[PolledRecord] = []
    try:
        _poll_until([source], lambda: len(got) == 1, into=got)
    finally:
        source.close()
    assert got[0].value == b"over the listener"


def test_sasl_settings_reach_librdkafka(
    kafka_sasl_config: dict[str, Any], new_topic: Any, kafka_bootstrap: str
) -> None:
    _round_trip(kafka_sasl_config, new_topic, kafka_bootstrap)


def test_ssl_settings_reach_librdkafka(
    kafka_ssl_config: dict[str, Any], new_topic: Any, kafka_bootstrap: str
) -> None:
    _round_trip(kafka_ssl_config, new_topic, kafka_bootstrap)


def test_an_unreachable_cluster_fails_the_start() -> None:
    """librdkafka connects lazily; the source asks once so that the service exits 3 (as with
    kafka-python's NoBrokersAvailable) instead of polling nothing for ever."""
    from confluent_kafka import KafkaException

    settings = Settings(bootstrap_servers="127.0.0.1:1", topic="t", kafka_client="confluent")
    with pytest.raises(KafkaException):
        ConfluentSource(settings, bootstrap_timeout_s=2)
