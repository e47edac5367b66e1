"""Kafka consumer adapter: poll, pause/resume, commit, rebalance events, lag.

Every method must be called from one thread (kafka-python's consumer is not thread-safe),
except that the rebalance listener runs on the client's I/O thread: it only records events,
which :meth:`KafkaSource.take_rebalance_events` hands to the owner thread. Nothing blocking
runs inside the listener (a blocking listener stalls heartbeats in kafka-python 3.x).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import MemberState, OffsetAndMetadata

from consumers import failpoints
from consumers.kafka_fixes import install_join_fix
from consumers.lanes import present_lanes
from consumers.ports import Partition, PolledRecord, RebalanceEvent
from consumers.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

_ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}


def _partition(tp: Any) -> Partition:
    return Partition(tp.topic, tp.partition)


def _partitions(tps: Iterable[Any]) -> frozenset[Partition]:
    return frozenset(Partition(tp.topic, tp.partition) for tp in tps)


def _withhold(consumer: KafkaConsumer, batches: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    """Failpoint ``kafka_fetch`` (tests only): a partition it matches (``~topic/partition``)
    is never returned by a poll, as when kafka-python stops fetching one: its records are
    dropped and the partition sought back to the first of them."""
    kept = {}
    for tp, records in batches.items():
        try:
            failpoints.hit("kafka_fetch", [f"{tp.topic}/{tp.partition}"])
        except failpoints.FailpointError:
            consumer.seek(tp, records[0].offset)
            continue
        kept[tp] = records
    return kept


class _Listener(ConsumerRebalanceListener):
    """Records the events for the loop; pauses what it is given while the loop is saturated.

    kafka-python runs it on its I/O thread, inside the loop's ``poll()``: partitions assigned
    there start unpaused and the same poll may fetch and return their records, past the
    loop's bound, unless they are paused here, before the poll goes on to fetch.
    """

    def __init__(self, pause: Callable[[Iterable[Any]], None]) -> None:
        self._lock = threading.Lock()
        self._pause = pause
        self.events: list[RebalanceEvent] = []
        self.joined = threading.Event()
        self.paused_topics: frozenset[str] = frozenset()  # set by the loop (pause_topics)

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._lock:
            self.events.append(RebalanceEvent("revoked", _partitions(revoked)))

    def on_partitions_lost(self, lost: Any) -> None:
        # dropped from the group (session expired, fenced): kafka-python forgets the
        # positions; the loop forgets the partitions at once (not "revoked": not ours to commit)
        with self._lock:
            self.events.append(RebalanceEvent("lost", _partitions(lost)))

    def on_partitions_assigned(self, assigned: Any) -> None:
        held = [tp for tp in assigned if tp.topic in self.paused_topics]
        if held:
            self._pause(held)
        with self._lock:
            self.events.append(RebalanceEvent("assigned", _partitions(assigned)))
        self.joined.set()

    def take(self) -> list[RebalanceEvent]:
        with self._lock:
            events, self.events = self.events, []
        return events


def _lane_note(settings: KafkaSettings) -> dict[str, Any]:
    return {"topic": settings.backfill_lane()}


class KafkaSource:
    """The service's group consumer, with explicit commits only: the :class:`Source` port
    over kafka-python (whose types stay in this module).

    Raises :class:`consumers.kafka_fixes.UnsupportedKafkaClient` on a kafka-python release
    other than the one whose join race it fixes."""

    def __init__(self, settings: Settings) -> None:
        install_join_fix()
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
            group_instance_id=settings.group_instance_id,
            client_id=f"tagfleet-{settings.group_id}",
        )
        self._listener = _Listener(lambda tps: self._consumer.pause(*tps))
        self._topics = frozenset(present_lanes(settings.input_topics(), self._consumer.topics()))
        if len(self._topics) < len(settings.input_topics()):
            log.info("no backfill topic at start: the upload lane only", extra=_lane_note(settings))
        self._consumer.subscribe(sorted(self._topics), listener=self._listener)
        for topic in sorted(self._topics):
            await_metadata_snapshot(self._consumer, topic)
        self._membership = _MembershipProbe(settings)
        self._offsets = _OffsetsProbe(settings)

    @property
    def joined(self) -> bool:
        """True once the consumer has received its first assignment from the group."""
        return self._listener.joined.is_set()

    def poll(self, timeout_ms: int) -> list[PolledRecord]:
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        release_parked_records(self._consumer)
        if failpoints.ACTIVE:
            batches = _withhold(self._consumer, batches)
        return [record for records in batches.values() for record in records]

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        return self._listener.take()

    def assignment(self) -> set[Partition]:
        return set(_partitions(self._consumer.assignment()))

    def set_paused(self, paused: bool) -> int:
        """Pause (or resume) every assigned partition; idempotent, so it re-pauses after a
        rebalance (pause state does not survive one). Returns the number paused."""
        return self.pause_topics(self._topics if paused else ())

    def pause_topics(self, topics: Collection[str]) -> int:
        """Pause every assigned partition of ``topics`` and resume every other one;
        idempotent, so it re-pauses after a rebalance (partitions assigned inside a poll are
        paused by the listener before that poll fetches). Returns the number paused."""
        wanted = frozenset(topics)
        self._listener.paused_topics = wanted
        assigned = set(self._consumer.assignment())
        hold = {tp for tp in assigned if tp.topic in wanted}
        paused = set(self._consumer.paused())
        if hold - paused:
            self._consumer.pause(*(hold - paused))
        if paused - hold:
            self._consumer.resume(*(paused - hold))
        return len(hold)

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
        """True when the broker no longer lists this consumer's member id in the group, as far
        as is known now: never blocks (the broker is asked on the probe's own thread, and the
        answer is there for a later call).

        Asked only while a (re)join drags on. kafka-python 3.0.12 was seen to send its
        SyncGroup, stop heartbeating and then wait for ever, while the broker removed the
        member after one session timeout: a healthy long join (other members slow to rejoin)
        keeps the member listed, a lost one does not.
        """
        generation = getattr(getattr(self._consumer, "_coordinator", None), "_generation", None)
        member_id = getattr(generation, "member_id", None)
        return bool(member_id) and self._membership.lost(str(member_id))

    def end_offsets(self) -> dict[Partition, int]:
        """End offset of every assigned partition: the latest of the high watermark seen in
        fetches and the offsets probe's last answer. Never blocks: the question (ListOffsets
        and the group's committed offsets) is asked on the probe's own thread, at most every
        5 s and never while this member knows the group is rebalancing.

        Deliberately nothing that asks kafka-python for positions: ``position()`` refreshes
        committed offsets through the group coordinator on every call.
        """
        assigned = set(self._consumer.assignment())
        if assigned and not self._rebalancing():
            self._offsets.ask(_partitions(assigned))
        answer = self._offsets.ends
        ends: dict[Partition, int] = {}
        for tp in assigned:
            known = [o for o in (self._consumer.highwater(tp), answer.get(_partition(tp))) if o]
            if known:
                ends[_partition(tp)] = max(known)
        return ends

    def committed_offsets(self) -> dict[Partition, int]:
        """The offsets probe's last answer for the assigned partitions (see the port)."""
        starts = self._offsets.starts
        return {
            p: starts[p]
            for p in (_partition(tp) for tp in self._consumer.assignment())
            if p in starts
        }

    def _rebalancing(self) -> bool:
        """The group is rebalancing as far as this member knows (a heartbeat was answered
        REBALANCE_IN_PROGRESS, or the join has not completed): no ListOffsets then, the loop
        must get back to ``poll()``."""
        coordinator = self._consumer._coordinator
        return bool(coordinator.need_rejoin() or coordinator.state is not MemberState.STABLE)

    def close(self) -> None:
        """Leave the group without committing anything we did not commit explicitly."""
        self._membership.close()
        self._offsets.close()
        self._consumer.close(autocommit=False, timeout_ms=5000)


class _MembershipProbe:
    """Asks the broker whether it lists a member of the group, on its own thread: an admin
    client's ``describe_groups`` blocks for up to a request timeout, which the loop, in the
    middle of a join, cannot afford. :meth:`lost` answers from the last reply at once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._wanted = threading.Event()
        self._closed = False
        self._member_id: str | None = None  # the member to look for
        self._lost_member: str | None = None  # the last member the broker did not list
        self._thread: threading.Thread | None = None

    def lost(self, member_id: str) -> bool:
        """Whether the broker's last reply missed ``member_id``; asks again in the background."""
        self._member_id = member_id
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tagfleet-membership", daemon=True
            )
            self._thread.start()
        self._wanted.set()
        return self._lost_member == member_id

    def _run(self) -> None:
        admin: Any = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closed:
                    return
                member_id, group = self._member_id, self._settings.group_id
                try:
                    if admin is None:
                        from kafka.admin import KafkaAdminClient

                        admin = KafkaAdminClient(
                            **self._settings.kafka_common(), client_id=f"tagfleet-{group}-check"
                        )
                    members = admin.describe_groups([group])[group]["members"]
                except Exception as exc:  # noqa: BLE001 - unknown: do not act on it
                    log.debug("group membership unavailable: %r", exc)
                    continue
                if member_id not in {m["member_id"] for m in members}:
                    self._lost_member = member_id
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()

    def close(self) -> None:
        """Stop the probe; a question still in flight ends on its own (daemon thread), so a
        silent broker never delays a shutdown by more than a moment."""
        self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


class _OffsetsProbe:
    """Asks the broker, on its own thread and with an admin client of its own, the end offset
    of the partitions it is given and where the group resumes them (its committed offset,
    else the start ``auto_offset_reset`` gives it). kafka-python's consumer is not
    thread-safe and its ``end_offsets`` blocks for up to a request timeout, which the loop
    cannot afford; :meth:`ask` never blocks, and the answers are read from :attr:`ends` and
    :attr:`starts` (replaced whole, so a reader sees one answer or the next)."""

    def __init__(self, settings: Settings, refresh_s: float = 5.0) -> None:
        self._settings = settings
        self._refresh_s = refresh_s
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
        admin: Any = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closed:
                    return
                try:
                    if admin is None:
                        from kafka.admin import KafkaAdminClient

                        admin = KafkaAdminClient(
                            **self._settings.kafka_common(),
                            client_id=f"tagfleet-{self._settings.group_id}-offsets",
                        )
                    self._answer(admin, self._partitions)
                except Exception as exc:  # noqa: BLE001 - unknown for now: asked again later
                    log.debug("offsets unavailable: %r", exc)
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()

    def _answer(self, admin: Any, partitions: frozenset[Partition]) -> None:
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        if not tps:
            return
        group = self._settings.group_id
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
        committed = admin.list_group_offsets({group: tps}).get(group, {})
        starts = {
            _partition(tp): meta.offset
            for tp, meta in committed.items()
            if meta is not None and meta.offset >= 0
        }
        missing = [tp for tp in tps if _partition(tp) not in starts]
        if missing and self._settings.auto_offset_reset == "earliest":
            first = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in missing})
            starts.update({_partition(tp): o.offset for tp, o in first.items()})
        elif missing:  # "latest": a new group starts at the end, with no lag
            starts.update({_partition(tp): ends[tp].offset for tp in missing if tp in ends})
        self.ends = {_partition(tp): o.offset for tp, o in ends.items()}
        self.starts = starts

    def close(self) -> None:
        """Stop the probe; a question in flight ends on its own (daemon thread)."""
        self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


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


def tls_problem(settings: KafkaSettings, timeout_s: float = 5.0) -> str:
    """Why a TLS session with the first bootstrap server fails under ``settings``, for the one
    line the service logs when Kafka could not be reached at start: a CA that did not sign
    the broker's certificate, a certificate that does not name the host (kafka-python checks
    the hostname, as this does), a client certificate refused. "" when the protocol is not
    over SSL, when the session works, or when the server cannot be reached at all (the
    caller's message covers that). Blocks for up to about twice ``timeout_s``."""
    if "SSL" not in settings.security_protocol:
        return ""
    server = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = server.rpartition(":")
    try:
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        return f"the TLS settings cannot be loaded: {exc}"
    try:
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
    except (OSError, ValueError):
        return ""
    try:
        with raw, context.wrap_socket(raw, server_hostname=host.strip("[]")) as tls:
            tls.settimeout(timeout_s)
            with contextlib.suppress(TimeoutError):
                tls.recv(1)  # TLS 1.3: a refused client certificate is an alert after it
    except ssl.SSLError as exc:
        return f"the TLS handshake with {server} failed: {exc}"
    except OSError:
        pass
    return ""
