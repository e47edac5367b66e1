"""Kafka consumer adapter: poll, pause/resume, commit, rebalance events, lag.

Every method must be called from one thread (kafka-python's consumer is not thread-safe),
except that the rebalance listener runs on the client's I/O thread: it only records events,
which :meth:`KafkaSource.take_rebalance_events` hands to the owner thread. Nothing blocking
runs inside the listener (a blocking listener stalls heartbeats in kafka-python 3.x).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.ports import Partition, PolledRecord, RebalanceEvent
from consumers.settings import Settings

log = logging.getLogger(__name__)

_ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}


def _partitions(tps: Iterable[Any]) -> frozenset[Partition]:
    return frozenset(Partition(tp.topic, tp.partition) for tp in tps)


class _Listener(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[RebalanceEvent] = []
        self.joined = threading.Event()

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._lock:
            self.events.append(RebalanceEvent("revoked", _partitions(revoked)))

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._lock:
            self.events.append(RebalanceEvent("assigned", _partitions(assigned)))
        self.joined.set()

    def take(self) -> list[RebalanceEvent]:
        with self._lock:
            events, self.events = self.events, []
        return events


class KafkaSource:
    """The service's group consumer, with explicit commits only: the :class:`Source` port
    over kafka-python (whose types stay in this module)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = KafkaConsumer(
            **settings.kafka_common(),
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
            partition_assignment_strategy=[_ASSIGNORS[settings.assignment_strategy]],
            client_id=f"tagfleet-{settings.group_id}",
        )
        self._listener = _Listener()
        self._consumer.subscribe([settings.topic], listener=self._listener)
        await_metadata_snapshot(self._consumer, settings.topic)
        self._end_offsets: dict[Partition, int] = {}
        self._end_offsets_at = 0.0
        self._settings = settings
        self._admin: Any = None

    @property
    def joined(self) -> bool:
        """True once the consumer has received its first assignment from the group."""
        return self._listener.joined.is_set()

    def poll(self, timeout_ms: int) -> list[PolledRecord]:
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        release_parked_records(self._consumer)
        return [record for records in batches.values() for record in records]

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        return self._listener.take()

    def assignment(self) -> set[Partition]:
        return set(_partitions(self._consumer.assignment()))

    def set_paused(self, paused: bool) -> int:
        """Pause (or resume) every assigned partition; idempotent, so it re-pauses after a
        rebalance (pause state does not survive one). Returns the number paused."""
        assigned = set(self._consumer.assignment())
        if paused:
            todo = assigned - set(self._consumer.paused())
            if todo:
                self._consumer.pause(*todo)
            return len(assigned)
        if self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())
        return 0

    def rewind(self, records: Iterable[PolledRecord]) -> int:
        """Seek every partition of ``records`` back to its first record, so that they are
        fetched again later; partitions no longer assigned are skipped. Returns how many were
        rewound.

        The loop calls this for records a poll returned while it wanted every partition
        paused: partitions assigned inside that poll start unpaused, and kafka-python may
        fetch from them before the loop can pause them again.
        """
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(record.offset, first.get(tp, record.offset))
        assigned = set(self._consumer.assignment())
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)
        return sum(1 for tp in first if tp in assigned)

    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int = 3000) -> bool:
        """Commit ``offsets`` (next offset to read) synchronously, for at most ``timeout_ms``.

        Returns False when the commit did not happen (a rebalance is in progress or moved the
        partitions, the coordinator is unreachable): the caller offers the offsets again
        later. The bound matters: kafka-python retries a commit without a timeout forever, and
        a loop blocked in ``commit()`` stops calling ``poll()``, which the rejoin needs.
        """
        if not offsets:
            return True
        try:
            self._consumer.commit(
                {
                    TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(o, "", -1)
                    for tp, o in offsets.items()
                },
                timeout_ms=timeout_ms,
            )
            return True
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offset commit did not happen; will retry", extra={"error": repr(exc)})
            return False

    def member_lost(self) -> bool:
        """True when the broker no longer lists this consumer's member id in the group.

        Asked only while a (re)join drags on. kafka-python 3.0.12 was seen to send its
        SyncGroup, stop heartbeating and then wait for ever, while the broker removed the
        member after one session timeout: a healthy long join (other members slow to rejoin)
        keeps the member listed, a lost one does not.
        """
        member_id = getattr(getattr(self._consumer, "_coordinator", None), "_generation", None)
        member_id = getattr(member_id, "member_id", None)
        if not member_id:
            return False
        try:
            if self._admin is None:
                from kafka.admin import KafkaAdminClient

                self._admin = KafkaAdminClient(
                    **self._settings.kafka_common(),
                    client_id=f"tagfleet-{self._settings.group_id}-check",
                )
            group = self._admin.describe_groups([self._settings.group_id])
            members = group[self._settings.group_id]["members"]
        except Exception as exc:  # noqa: BLE001 - unknown: do not act on it
            log.debug("group membership unavailable: %r", exc)
            return False
        return member_id not in {m["member_id"] for m in members}

    def end_offsets(self, refresh_s: float = 5.0) -> dict[Partition, int]:
        """End offset of every assigned partition: the latest of the high watermark seen in
        fetches and a ListOffsets answer at most ``refresh_s`` old.

        Deliberately nothing that asks kafka-python for positions: ``position()`` refreshes
        committed offsets through the group coordinator on every call, which the loop has no
        reason to do every few seconds (it knows the offsets it polled).
        """
        assigned = set(self._consumer.assignment())
        now = time.monotonic()
        if assigned and (
            now - self._end_offsets_at > refresh_s or not assigned <= set(self._end_offsets)
        ):
            try:
                answer = self._consumer.end_offsets(list(assigned), timeout_ms=2000)
                self._end_offsets = {Partition(t.topic, t.partition): o for t, o in answer.items()}
                self._end_offsets_at = now
            except KafkaError as exc:
                log.debug("end offsets unavailable: %s", exc)
        ends: dict[Partition, int] = {}
        for tp in assigned:
            known = [o for o in (self._consumer.highwater(tp), self._end_offsets.get(tp)) if o]
            if known:
                ends[Partition(tp.topic, tp.partition)] = max(known)
        return ends

    def close(self) -> None:
        """Leave the group without committing anything we did not commit explicitly."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
        self._consumer.close(autocommit=False, timeout_ms=5000)


def await_metadata_snapshot(consumer: KafkaConsumer, topic: str, timeout_s: float = 15.0) -> bool:
    """Wait until the group coordinator's metadata snapshot lists ``topic``'s partitions.

    kafka-python 3.0.12 builds that snapshot when a metadata update arrives after
    ``subscribe()``. A first poll that joins before it makes the leader record an empty
    assignment snapshot; the update then arrives about half a second later (it queues behind
    the first fetch's long poll), the snapshots differ and the member rejoins right after its
    first assignment: a second rebalance at every start, and the window in which kafka-python
    loses joins (see ``docs/reliability.md``). Returns False (and logs) after ``timeout_s``.
    Relies on kafka-python internals, hence the exact pin.
    """
    coordinator = consumer._coordinator
    consumer._client.cluster.request_update()
    deadline = time.monotonic() + timeout_s
    while not coordinator._metadata_snapshot.get(topic):
        if time.monotonic() >= deadline:
            log.warning("no partition metadata yet; joining anyway", extra={"topic": topic})
            return False
        time.sleep(0.05)
    return True


def release_parked_records(consumer: KafkaConsumer) -> None:
    """Work around a kafka-python 3.0.12 bug that stops a resumed partition for good.

    The fetcher parks the buffered records of a partition paused mid-batch (its port of
    KAFKA-7548) and restores them on resume only while its in-line slot is ``None``; but that
    slot keeps a drained, empty object once any other partition's records were returned, so
    the parked partition is never restored, and never fetched again: the consumer owns
    partitions with lag and polls nothing. That happens here when a rebalance assigns an
    unpaused partition while the loop holds the others paused. Emptying a drained slot is what
    the fetcher does itself on parking. kafka-python is pinned; tests/consumers/test_source.py
    shows the bug on a raw consumer and its absence through this function.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:
        fetcher._next_partition_records = None  # type: ignore[union-attr]
