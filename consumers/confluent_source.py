"""Kafka consumer adapter over confluent-kafka (librdkafka): the :class:`Source` port, as
:class:`consumers.source.KafkaSource` gives it over kafka-python, with the same events.

What this relies on in librdkafka (and how it differs from kafka-python):

- **Threads.** The group protocol (join, sync, heartbeats) and the fetches run on librdkafka's
  own threads; the rebalance callbacks (``on_assign``, ``on_revoke``, ``on_lost``), the error
  callback and the log lines are served on the thread that calls ``consume()``: the loop,
  inside :meth:`ConfluentSource.poll`. So, unlike kafka-python's I/O-thread listener, they may
  call the consumer (``assign``, ``pause``) and their events are complete when ``poll``
  returns. Heartbeats never wait for the loop; ``max.poll.interval.ms`` does.
- **Eager rebalances** (``range``, ``roundrobin``): ``on_revoke`` with everything, then
  ``on_assign`` with the whole new assignment. librdkafka forgets a revoked partition's
  position (an assignment starts from the committed offset), where kafka-python keeps the
  fetch position of a partition revoked and assigned back in one rebalance, which the loop
  relies on (it keeps that partition's watermark). The positions at the revocation (as the
  loop saw them: polled, or rewound to; librdkafka's ``position()`` shows a seek only once its
  thread applied it) are therefore kept and handed to the next assignment, for the partitions
  it gives back.
- **Pause state** is the application's: a partition assigned while the loop is saturated is
  assigned and paused inside ``on_assign`` (no fetch starts before the committed offset is
  known, so nothing is fetched in between), any other assigned partition is resumed there, so
  no pause survives a rebalance unasked, as with kafka-python.
- **Lost partitions**: librdkafka calls ``on_lost`` when the member was dropped (session
  expired, fenced) and joins again by itself; the loop forgets them, and they restart from the
  last commit.
- **Commits** are synchronous (``asynchronous=False``); librdkafka waits at most one session
  timeout for an unknown coordinator, then fails the commit, which the loop offers again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.confluent_config import librdkafka_config
from consumers.lanes import present_lanes
from consumers.ports import Partition, PolledRecord, RebalanceEvent
from consumers.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """A polled record, as the loop reads it (librdkafka's ``Message`` has methods instead)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None


def consumer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka's consumer properties for ``settings``: explicit commits only, eager
    assignment, the same timeouts as :class:`consumers.source.KafkaSource`."""
    config = librdkafka_config(settings.kafka_common())
    config.update(
        {
            "group.id": settings.group_id,
            "client.id": f"tagfleet-{settings.group_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.auto_offset_reset,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(1000, settings.session_timeout_ms // 4),
            "partition.assignment.strategy": settings.assignment_strategy,
            "enable.partition.eof": False,
            "logger": logging.getLogger("confluent_kafka"),
        }
    )
    if settings.group_instance_id:
        config["group.instance.id"] = settings.group_instance_id
    return config


def _partitions(tps: Iterable[TopicPartition]) -> frozenset[Partition]:
    return frozenset(Partition(tp.topic, tp.partition) for tp in tps)


def _record(message: Message) -> Record:
    kind, stamp = message.timestamp()
    return Record(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        timestamp=None if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
    )


class ConfluentSource:
    """The service's group consumer over librdkafka, with explicit commits only.

    Every method, and the callbacks, run on the loop's thread (see the module's docstring).
    Raises :class:`confluent_kafka.KafkaException` when no broker answers within
    ``bootstrap_timeout_s`` (30 s: as long as kafka-python tries before NoBrokersAvailable).
    """

    def __init__(self, settings: Settings, bootstrap_timeout_s: float = 30.0) -> None:
        self._max_records = settings.max_poll_records
        self._events: list[RebalanceEvent] = []
        self._joined = threading.Event()  # read by the probes' threads
        self._held_topics: frozenset[str] = frozenset()  # paused, assigned or not yet
        self._assigned: set[Partition] = set()
        self._paused: set[Partition] = set()
        self._next: dict[Partition, int] = {}  # next offset to hand out, as the loop saw it
        self._revoked_at: dict[Partition, int] = {}  # positions at the last revocation
        self._rebalancing = True  # joining counts as one
        self._consumer = Consumer({**consumer_config(settings), "error_cb": self._on_error})
        try:
            # librdkafka connects lazily: ask once, so an unreachable cluster fails the start
            # (as kafka-python's NoBrokersAvailable does) instead of polling nothing for ever
            cluster = self._consumer.list_topics(timeout=bootstrap_timeout_s)
        except KafkaException:
            self._consumer.close()
            raise
        self._topics = frozenset(present_lanes(settings.input_topics(), set(cluster.topics)))
        if len(self._topics) < len(settings.input_topics()):
            log.info(
                "no backfill topic at start: the upload lane only",
                extra={"topic": settings.backfill_lane()},
            )
        self._consumer.subscribe(
            sorted(self._topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._offsets = _OffsetsProbe(settings)

    # -- librdkafka's callbacks, served inside consume() on the loop thread ----------------
    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        kept = self._revoked_at
        self._revoked_at = {}
        # a partition given back in the same rebalance goes on from where it was revoked;
        # any other starts from the committed offset (OFFSET_INVALID)
        start = [
            TopicPartition(
                tp.topic, tp.partition, kept.get(Partition(tp.topic, tp.partition), OFFSET_INVALID)
            )
            for tp in assigned
        ]
        consumer.assign(start)
        partitions = _partitions(assigned)
        self._assigned = set(partitions)
        self._next = {tp: o for tp, o in kept.items() if tp in partitions}
        if start:
            # before any fetch: the partitions of a held topic (all when the member is
            # saturated, the backfill lane while uploads are busy) take nothing new
            held = [tp for tp in start if tp.topic in self._held_topics]
            free = [tp for tp in start if tp.topic not in self._held_topics]
            if held:
                consumer.pause(held)
            if free:
                consumer.resume(free)
            self._paused = set(_partitions(held))
        self._events.append(RebalanceEvent("assigned", partitions))
        self._rebalancing = False
        self._joined.set()

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        # the positions the loop saw (polled, or rewound to), not librdkafka's position(): a
        # seek is applied on librdkafka's thread and may not show yet. A partition nothing was
        # polled from since its assignment is absent: the commit decides where it starts.
        self._revoked_at = {tp: self._next[tp] for tp in _partitions(revoked) if tp in self._next}
        self._forget(revoked)
        self._events.append(RebalanceEvent("revoked", _partitions(revoked)))
        self._rebalancing = True

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        # dropped from the group: nothing of these is ours to commit, nor to resume from
        self._revoked_at = {}
        self._next = {}
        self._forget(lost)
        self._events.append(RebalanceEvent("lost", _partitions(lost)))
        self._rebalancing = True

    def _forget(self, tps: list[TopicPartition]) -> None:
        gone = _partitions(tps)
        self._assigned -= gone
        self._paused -= gone

    def _on_error(self, error: KafkaError) -> None:
        log.warning("kafka client error", extra={"error": str(error), "code": error.name()})

    # -- the Source port ------------------------------------------------------------------
    @property
    def joined(self) -> bool:
        """True once the consumer has received its first assignment from the group."""
        return self._joined.is_set()

    def poll(self, timeout_ms: int) -> list[PolledRecord]:
        """Up to ``max_poll_records`` records, waiting at most ``timeout_ms``; rebalance
        callbacks run in here. A fatal client error (e.g. a fenced static member) raises."""
        messages = self._consumer.consume(self._max_records, timeout=timeout_ms / 1000)
        records: list[PolledRecord] = []
        for message in messages:
            error = message.error()
            if error is None:
                record = _record(message)
                self._next[Partition(record.topic, record.partition)] = record.offset + 1
                records.append(record)
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("consume error", extra={"error": str(error), "code": error.name()})
        return records

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        events, self._events = self._events, []
        return events

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def set_paused(self, paused: bool) -> int:
        """Pause (or resume) every assigned partition; idempotent. Returns the number paused."""
        return self.pause_topics(self._topics if paused else ())

    def pause_topics(self, topics: Collection[str]) -> int:
        """Pause every assigned partition of ``topics`` and resume every other one;
        idempotent (partitions assigned later are paused in the assignment callback, before
        any fetch). Returns the number paused."""
        self._held_topics = frozenset(topics)
        hold = {tp for tp in self._assigned if tp.topic in self._held_topics}
        todo = hold - self._paused
        if todo:
            self._consumer.pause([TopicPartition(tp.topic, tp.partition) for tp in todo])
        free = (self._paused - hold) & self._assigned
        if free:
            self._consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in free])
        self._paused = hold
        return len(hold)

    def rewind(self, records: Iterable[PolledRecord]) -> int:
        """Seek every assigned partition of ``records`` back to its first record, so that they
        are fetched again later. Returns how many were rewound."""
        first: dict[Partition, int] = {}
        for record in records:
            tp = Partition(record.topic, record.partition)
            first[tp] = min(record.offset, first.get(tp, record.offset))
        rewound = 0
        for tp, offset in first.items():
            if tp not in self._assigned:
                continue
            # a seek librdkafka refuses raises: going on past records never dispatched would
            # let the commits pass them; a crash redelivers them from the last commit
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            self._next[tp] = offset
            rewound += 1
        return rewound

    def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit ``offsets`` (next offset to read) synchronously. False when it did not
        happen (a rebalance moved the partitions, the coordinator is unreachable): the caller
        offers them again later."""
        if not offsets:
            return True
        try:
            answer = self._consumer.commit(
                offsets=[TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            log.warning("offset commit did not happen; will retry", extra={"error": str(exc)})
            return False
        failed = [tp for tp in answer or [] if tp.error is not None]
        if failed:
            log.warning(
                "offset commit did not happen; will retry", extra={"error": str(failed[0].error)}
            )
            return False
        return True

    def member_lost(self) -> bool:
        """Always False: librdkafka notices a member the broker dropped (its heartbeat is
        refused) on its own thread, calls ``on_lost`` and joins again by itself; the lost join
        that kafka-python 3.0.12 waited on for ever is not librdkafka's. A join that never ends
        is still replaced after ``rejoin_stuck_s`` by the loop."""
        return False

    def end_offsets(self) -> dict[Partition, int]:
        """End offset of every assigned partition: the latest of the high watermark of the
        last fetch and the offsets probe's last answer. Never blocks: the broker is asked on
        the probe's own thread, at most every 5 s, and not while a rebalance is under way."""
        if self._assigned and not self._rebalancing:
            self._offsets.ask(frozenset(self._assigned))
        answer = self._offsets.ends
        ends: dict[Partition, int] = {}
        for tp in self._assigned:
            known = [o for o in (self._cached_high(tp), answer.get(tp)) if o and o > 0]
            if known:
                ends[tp] = max(known)
        return ends

    def committed_offsets(self) -> dict[Partition, int]:
        """The offsets probe's last answer for the assigned partitions (see the port)."""
        starts = self._offsets.starts
        return {tp: starts[tp] for tp in self._assigned if tp in starts}

    def _cached_high(self, tp: Partition) -> int | None:
        """The high watermark of the last fetch response: librdkafka's cache, no request."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), cached=True
            )
        except KafkaException:
            return None
        return None if high == OFFSET_INVALID else high

    def close(self) -> None:
        """Leave the group (a static member does not) without committing anything we did not
        commit explicitly (auto-commit is off)."""
        self._offsets.close()
        self._consumer.close()


class _OffsetsProbe:
    """Asks the broker, on its own thread and with a consumer handle of its own (never in the
    group), the end offset of the partitions it is given and where the group resumes them
    (its committed offset, else the start ``auto_offset_reset`` gives it). Both questions
    block for up to a request timeout, which the loop cannot afford; a handle of its own
    because the loop's may be closed while a question is in flight. :meth:`ask` never blocks;
    :attr:`ends` and :attr:`starts` are replaced whole, so a reader sees one answer or the
    next."""

    def __init__(self, settings: Settings, refresh_s: float = 5.0, timeout_s: float = 5.0) -> None:
        config = consumer_config(settings)
        config.pop("group.instance.id", None)
        config["client.id"] = f"tagfleet-{settings.group_id}-offsets"
        self._config = config
        self._earliest = settings.auto_offset_reset == "earliest"
        self._refresh_s, self._timeout_s = refresh_s, timeout_s
        self._wanted = threading.Event()
        self._closed = False
        self._partitions: frozenset[Partition] = frozenset()
        self._asked_at = -refresh_s
        self._thread: threading.Thread | None = None
        self.ends: dict[Partition, int] = {}
        self.starts: dict[Partition, int] = {}

    def ask(self, partitions: frozenset[Partition]) -> None:
        """Ask again for ``partitions`` when the last answer is older than the refresh
        interval or does not cover them; returns at once."""
        now = time.monotonic()
        if now - self._asked_at < self._refresh_s and partitions <= set(self.ends):
            return
        self._asked_at = now
        self._partitions = partitions
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tagfleet-offsets", daemon=True)
            self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closed:
                    return
                try:
                    if consumer is None:
                        consumer = Consumer(self._config)
                    self._answer(consumer, self._partitions)
                except Exception as exc:  # noqa: BLE001 - unknown for now: asked again later
                    log.debug("offsets unavailable: %r", exc)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

    def _answer(self, consumer: Consumer, partitions: frozenset[Partition]) -> None:
        tps = [TopicPartition(p.topic, p.partition) for p in sorted(partitions)]
        if not tps:
            return
        ends: dict[Partition, int] = {}
        firsts: dict[Partition, int] = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout_s)
            ends[Partition(tp.topic, tp.partition)] = high
            firsts[Partition(tp.topic, tp.partition)] = low
        starts = {
            Partition(tp.topic, tp.partition): tp.offset
            for tp in consumer.committed(tps, timeout=self._timeout_s)
            if tp.offset >= 0
        }
        for p in ends.keys() - starts.keys():  # no commit yet: where the group starts it
            starts[p] = firsts[p] if self._earliest else ends[p]
        self.ends, self.starts = ends, starts

    def close(self) -> None:
        """Stop the probe; a question in flight ends on its own (daemon thread)."""
        self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
