"""The Kafka adapter against the real broker: kafka-python behaviour the loop depends on."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from consumers.ports import Partition
from consumers.settings import Settings
from consumers.source import (
    KafkaSource,
    _MembershipProbe,
    _OffsetsProbe,
    await_metadata_snapshot,
    release_parked_records,
)

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


def _saturated_member_takes_over(bootstrap: str, topic: str, listener_pauses: bool) -> int:
    """Two KafkaSources share ``topic``'s group; the first is saturated (everything paused,
    as the loop does before each poll) when the second leaves, so the first is assigned the
    second's partitions inside one of its polls. Returns the records its polls handed out
    over 3 s (the loop wants none while saturated)."""
    settings = Settings(
        bootstrap_servers=bootstrap, topic=topic, group_id=f"g-{topic}", results_topic=""
    )
    saturated, leaving = KafkaSource(settings), KafkaSource(settings)
    try:
        deadline = time.monotonic() + 30
        while len(saturated.assignment()) + len(leaving.assignment()) < 4 or not (
            saturated.assignment() and leaving.assignment()
        ):
            assert time.monotonic() < deadline, "the two members did not share the topic"
            saturated.set_paused(True)
            assert saturated.poll(100) == []
            leaving.set_paused(True)
            leaving.poll(100)
        if not listener_pauses:
            saturated._listener._pause = lambda tps: None
        leaving.close()
        handed = 0
        deadline = time.monotonic() + 30
        while len(saturated.assignment()) < 4:
            assert time.monotonic() < deadline, "the partitions did not move"
            saturated.set_paused(True)
            handed += len(saturated.poll(1000))  # long: a fetch fits in the same poll
        for _ in range(3):
            saturated.set_paused(True)
            handed += len(saturated.poll(1000))
        return handed
    finally:
        saturated.close()


@pytest.fixture
def four_partitions(kafka_bootstrap: str, new_topic: Any) -> str:
    topic = new_topic(partitions=4)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for partition in range(4):
        for i in range(20):
            producer.send(topic, f"{partition}-{i}".encode(), partition=partition)
    producer.flush()
    producer.close()
    return topic


def test_partitions_assigned_to_a_saturated_member_are_paused_before_any_fetch(
    kafka_bootstrap: str, four_partitions: str
) -> None:
    assert _saturated_member_takes_over(kafka_bootstrap, four_partitions, True) == 0


def test_without_the_listener_pause_a_saturated_member_polls_records_it_must_not_take(
    kafka_bootstrap: str, four_partitions: str
) -> None:
    """Why the listener pauses: kafka-python fetches partitions assigned inside a poll before
    the loop can pause them (the loop's rewind is the second line of defence)."""
    assert _saturated_member_takes_over(kafka_bootstrap, four_partitions, False) > 0


def test_a_static_member_restarted_within_its_session_rebalances_nobody(
    kafka_bootstrap: str, four_partitions: str
) -> None:
    """group_instance_id (the chart's staticMembership): a member that closes and comes back
    under the same id within session_timeout_ms gets its partitions back and the other member
    sees no rebalance (a dynamic member's leave and join would revoke everything twice)."""

    def source(instance: str) -> KafkaSource:
        return KafkaSource(
            Settings(
                bootstrap_servers=kafka_bootstrap,
                topic=four_partitions,
                group_id=f"g-{four_partitions}",
                results_topic="",
                group_instance_id=instance,
                session_timeout_ms=30_000,
            )
        )

    def poll_until(sources: list[KafkaSource], done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, "the group did not settle"
            for s in sources:
                s.set_paused(True)
                s.poll(100)

    leader = source("pod-a")
    poll_until([leader], lambda: len(leader.assignment()) == 4)
    member = source("pod-b")
    poll_until([leader, member], lambda: len(member.assignment()) == 2 == len(leader.assignment()))
    held = member.assignment()
    leader.take_rebalance_events()
    member.close()  # a static member does not leave the group
    back = source("pod-b")
    try:
        poll_until([leader, back], lambda: back.assignment() == held)
        for _ in range(10):  # and it stays so
            poll_until([leader, back], lambda: True)
        assert leader.take_rebalance_events() == []  # nothing revoked, nothing reassigned
        assert back.assignment() == held and len(leader.assignment()) == 2
    finally:
        back.close()
        leader.close()


def test_the_membership_probe_never_blocks_the_caller(kafka_bootstrap: str) -> None:
    """member_lost() is asked by the loop mid-join: the admin call runs on the probe's thread
    and the caller gets the last answer at once, even from a broker that does not answer."""
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    host, port = silent.getsockname()
    probe = _MembershipProbe(Settings(bootstrap_servers=f"{host}:{port}", results_topic=""))
    try:
        started = time.monotonic()
        for _ in range(20):
            assert probe.lost("member-1") is False
        assert time.monotonic() - started < 0.5
    finally:
        probe.close()
        silent.close()
    reachable = _MembershipProbe(
        Settings(bootstrap_servers=kafka_bootstrap, group_id="g-nobody", results_topic="")
    )
    try:  # a member the broker does not list is reported lost once the broker answered
        deadline = time.monotonic() + 30
        while not reachable.lost("member-1"):
            assert time.monotonic() < deadline, "the probe never answered"
            time.sleep(0.05)
    finally:
        reachable.close()


def test_the_offsets_probe_never_blocks_the_caller_and_answers_every_partition(
    kafka_bootstrap: str, new_topic: Any
) -> None:
    """The stall detector's end and committed offsets are asked on the probe's thread: the
    loop's call returns at once even from a broker that never answers; from the real one the
    answer covers every partition asked, fetched or not, the group's commit where there is
    one and the start of the log where there is none."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    host, port = silent.getsockname()
    probe = _OffsetsProbe(Settings(bootstrap_servers=f"{host}:{port}", results_topic=""))
    try:
        started = time.monotonic()
        for i in range(20):
            probe.ask(frozenset({Partition("t", i % 4)}))
        assert time.monotonic() - started < 0.5
        assert probe.ends == {} and probe.starts == {}
    finally:
        probe.close()
        silent.close()
    topic = new_topic(partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(5):
        producer.send(topic, value=b"x", partition=i % 2)  # 3 on partition 0, 2 on 1
    producer.flush(30)
    producer.close()
    group = f"g-{topic}"
    committer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)})
    committer.close(autocommit=False)
    reachable = _OffsetsProbe(
        Settings(bootstrap_servers=kafka_bootstrap, group_id=group, results_topic="")
    )
    wanted = frozenset({Partition(topic, 0), Partition(topic, 1)})
    try:
        deadline = time.monotonic() + 30
        while reachable.ends.keys() != wanted:
            assert time.monotonic() < deadline, "the probe never answered"
            reachable.ask(wanted)
            time.sleep(0.05)
        assert reachable.ends == {Partition(topic, 0): 3, Partition(topic, 1): 2}
        assert reachable.starts == {Partition(topic, 0): 1, Partition(topic, 1): 0}
    finally:
        reachable.close()
