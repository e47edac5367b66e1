"""The fix we carry for kafka-python's join race (``consumers/kafka_fixes.py``), against the
real broker: a JoinGroup and SyncGroup that complete while the member is outside ``poll()``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.base import BaseCoordinator
from kafka.structs import MemberState

from consumers import kafka_fixes
from consumers.kafka_fixes import (
    ORIGINAL_JOIN_GROUP_ASYNC,
    UnsupportedKafkaClient,
    check_kafka_client,
    install_join_fix,
)
from consumers.metrics import Metrics
from consumers.pipeline import EXIT_FATAL
from consumers.readiness import Readiness
from consumers.service import serve
from consumers.settings import Settings
from consumers.source import await_metadata_snapshot


@dataclass
class _Calls:
    """What a member did: JoinGroup and SyncGroup answered with success, assignments seen."""

    joins: int = 0
    syncs: int = 0
    assigned: list[int] = field(default_factory=list)


def _member(bootstrap: str, topic: str, group: str) -> tuple[KafkaConsumer, _Calls]:
    """A group consumer whose successful JoinGroup and SyncGroup answers are counted (the
    coordinator's response hooks), subscribed and holding its metadata snapshot."""
    calls = _Calls()

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            calls.assigned.append(len(assigned))

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=300,  # the held member hears of the rebalance quickly
        max_poll_interval_ms=60_000,
    )
    coordinator = consumer._coordinator
    process_join = coordinator._process_join_group_response
    process_sync = coordinator._process_sync_group_response

    def counted_join(*args: Any) -> Any:
        answer = process_join(*args)  # raises on an error answer (MemberIdRequired, ...)
        calls.joins += 1
        return answer

    def counted_sync(*args: Any) -> Any:
        answer = process_sync(*args)
        calls.syncs += 1
        return answer

    coordinator._process_join_group_response = counted_join
    coordinator._process_sync_group_response = counted_sync
    consumer.subscribe([topic], listener=Listener())
    assert await_metadata_snapshot(consumer, topic)  # no second rebalance from the snapshot
    return consumer, calls


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def _stable(consumer: KafkaConsumer) -> bool:
    coordinator = consumer._coordinator
    return bool(
        coordinator.state is MemberState.STABLE
        and not coordinator.need_rejoin()
        and consumer.assignment()
    )


def _join_completed_outside_poll(bootstrap: str, topic: str) -> _Calls:
    """A steady member holds the group; a newcomer polls until its JoinGroup is sent (the broker
    holds it until the steady member rejoins), then stays outside ``poll()`` while the steady
    member's polls complete the rebalance, so the newcomer's JoinGroup and SyncGroup finish on
    its I/O thread. Then both poll until the group is stable: the newcomer's counts."""
    group = f"g-{topic}"
    steady, _ = _member(bootstrap, topic, group)
    newcomer, calls = _member(bootstrap, topic, group)
    try:
        _wait(lambda: steady.poll(timeout_ms=100) is not None and _stable(steady), 30, "steady")
        coordinator = newcomer._coordinator

        def join_sent() -> bool:
            newcomer.poll(timeout_ms=100)
            task = coordinator._join_task
            return task is not None and not task.is_done and steady._coordinator.need_rejoin()

        _wait(join_sent, 30, "the newcomer's JoinGroup, held by the broker")
        assert calls.joins == 0  # the broker holds the JoinGroup until the steady member rejoins
        # the newcomer stays outside poll() from here on, until its join task is done
        _wait(
            lambda: steady.poll(timeout_ms=100) is not None and coordinator._join_task.is_done,
            30,
            "the newcomer's JoinGroup and SyncGroup to complete outside poll()",
        )
        assert (calls.joins, calls.syncs, calls.assigned) == (1, 1, [])  # done, not yet applied
        settled_since: float | None = None
        deadline = time.monotonic() + 30
        while settled_since is None or time.monotonic() - settled_since < 2:
            assert time.monotonic() < deadline, "the group did not settle"
            newcomer.poll(timeout_ms=100)
            steady.poll(timeout_ms=100)
            both = _stable(newcomer) and _stable(steady)
            settled_since = (settled_since or time.monotonic()) if both else None
        owned = [tp.partition for c in (newcomer, steady) for tp in c.assignment()]
        assert sorted(owned) == [0, 1, 2, 3]
        return calls
    finally:
        newcomer.close(autocommit=False)
        steady.close(autocommit=False)


@pytest.mark.integration
def test_a_join_completed_outside_poll_is_kept_not_sent_again(
    kafka_bootstrap: str, new_topic: Any
) -> None:
    install_join_fix()
    calls = _join_completed_outside_poll(kafka_bootstrap, new_topic(partitions=4))
    assert (calls.joins, calls.syncs) == (1, 1)  # the next polls applied it: one JoinGroup
    assert calls.assigned == [2]


@pytest.mark.integration
def test_kafka_python_still_discards_a_join_completed_outside_poll(
    kafka_bootstrap: str, new_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A canary: when this fails, kafka-python fixed its join race and consumers/kafka_fixes.py
    (and the exact pin in pyproject.toml) can go."""
    monkeypatch.setattr(BaseCoordinator, "join_group_async", ORIGINAL_JOIN_GROUP_ASYNC)
    calls = _join_completed_outside_poll(kafka_bootstrap, new_topic(partitions=4))
    assert (calls.joins, calls.syncs) == (2, 2), calls  # the finished join was thrown away


def test_the_fix_refuses_another_kafka_python_release(monkeypatch: pytest.MonkeyPatch) -> None:
    check_kafka_client()  # the pinned release passes
    monkeypatch.setattr(kafka_fixes.metadata, "version", lambda name: "3.0.13")
    with pytest.raises(UnsupportedKafkaClient, match="kafka-python 3.0.13 is installed"):
        check_kafka_client()


def test_the_fix_refuses_a_changed_join_group_async(monkeypatch: pytest.MonkeyPatch) -> None:
    async def changed(self: Any, timeout_ms: int | None = None) -> bool:
        return True

    monkeypatch.setattr(kafka_fixes, "ORIGINAL_JOIN_GROUP_ASYNC", changed)
    with pytest.raises(UnsupportedKafkaClient, match="not the code"):
        check_kafka_client()


def test_the_service_refuses_to_start_on_another_kafka_python_release(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(BaseCoordinator, "join_group_async", ORIGINAL_JOIN_GROUP_ASYNC)
    monkeypatch.setattr(kafka_fixes.metadata, "version", lambda name: "3.1.0")
    code = serve(Settings(), Metrics(), Readiness(), threading.Event())
    assert code == EXIT_FATAL
    assert "kafka-python 3.1.0 is installed" in caplog.text
    assert BaseCoordinator.join_group_async is ORIGINAL_JOIN_GROUP_ASYNC  # nothing patched
