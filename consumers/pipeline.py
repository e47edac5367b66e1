"""The consume loop: poll, validate, dispatch, complete, commit.

Threads: this loop owns the Kafka consumer and all bookkeeping (watermarks, key gate, in-flight
count); workers report back through ``_completions``. The loop never blocks for long, so it
keeps calling ``poll()`` (no eviction by ``max_poll_interval_ms`` whatever a batch costs) and
pauses every partition while ``max_in_flight`` messages are unfinished (backpressure, not
unbounded buffering). Offsets are committed, per partition, only below the first message that
is neither stored nor dead-lettered (see :mod:`consumers.watermark`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from consumers.budget import ByteBudget
from consumers.dedup import stored_reuse
from consumers.domain import (
    AssetRemoval,
    AssetRequest,
    AssetResult,
    PermanentError,
    Reason,
    SourcePosition,
)
from consumers.events import EventPolicy, parse_event
from consumers.lanes import BACKFILL, UPLOAD, LaneLimits, LanePolicy
from consumers.metrics import Metrics
from consumers.ports import (
    EmbeddingSink,
    Fleet,
    Partition,
    PolledRecord,
    RebalanceEvent,
    RecordProducer,
    Source,
    Store,
    StoredReuse,
)
from consumers.results import aggregate_failures, public_error
from consumers.settings import Settings
from consumers.stages import DeadLetterer, Inferencer, Outlets, Preparer, RetryPolicy, Storer
from consumers.watermark import Watermarks
from consumers.work import KeyGate, LaneQueue, Message, WorkItem

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 3


@dataclass(frozen=True, slots=True)
class Parts:
    """The adapters the pipeline drives (built by :func:`consumers.service.serve`)."""

    source: Source
    fleet: Fleet
    store: Store
    producer: RecordProducer
    fetch: Callable[[AssetRequest, Callable[[int], None]], bytes]
    decode: Callable[[bytes], Any]
    new_source: Callable[[], Source] | None = None
    object_readable: Callable[[str, str], bool] | None = None  # None: removals unconfirmed
    review: Callable[[Sequence[AssetResult]], None] | None = None  # the review queue's hook
    reload: Callable[[], Fleet | None] | None = None  # a new fleet to swap in between batches
    embeddings: EmbeddingSink | None = None  # each image's pooled embeddings (None: not kept)
    reuse: StoredReuse | None = None  # stored results by content hash (None: batch and recent)
    dedup: bool = True  # False: no content-hash reuse at all (reuse_results off)


_REBUILD_BACKOFF_S = 5.0  # between attempts to build a consumer after the last one was closed


class _DetachedSource:
    """The source between closing a stuck consumer and its replacement, while no replacement
    could be built: it owns nothing and polls nothing."""

    joined = False

    def poll(self, timeout_ms: int) -> list[PolledRecord]:
        time.sleep(timeout_ms / 1000)  # a poll's wait, so the loop does not spin
        return []

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        return []

    def assignment(self) -> set[Partition]:
        return set()

    def set_paused(self, paused: bool) -> int:
        return 0

    def pause_topics(self, topics: Collection[str]) -> int:
        return 0

    def rewind(self, records: Sequence[PolledRecord]) -> int:
        return 0

    def commit(self, offsets: Mapping[Partition, int]) -> bool:
        return False

    def member_lost(self) -> bool:
        return False

    def end_offsets(self) -> dict[Partition, int]:
        return {}

    def committed_offsets(self) -> dict[Partition, int]:
        return {}

    def close(self) -> None:
        pass


_DETACHED: Source = _DetachedSource()


class Pipeline:
    def __init__(self, settings: Settings, parts: Parts, metrics: Metrics) -> None:
        self.settings, self.parts, self.metrics = settings, parts, metrics
        self.stopping = threading.Event()
        self._abandon = threading.Event()
        self.fatal_reason: str | None = None
        self._completions: queue.Queue[tuple[WorkItem, str]] = queue.Queue()
        self._watermarks: Watermarks[Partition] = Watermarks()
        self._gate = KeyGate()
        self._committed: dict[Partition, int] = {}
        self._fetched: dict[Partition, int] = {}  # next offset after the last one polled
        self._paused = False
        self._revoking: set[Partition] = set()
        self._rebalancing_since: float | None = time.monotonic()  # joining counts as one
        # the stall detector: a clock that runs only while the loop is unpaused and not
        # rebalancing, and per assigned partition (next offset polled, clock) when it last
        # moved; its longest stall; since when partitions lag, and the last completion
        self._unpaused_s = 0.0
        self._stall_marks: dict[Partition, tuple[int | None, float]] = {}
        self._longest_stall_s = 0.0
        self._lag_since: float | None = None
        self._last_done = time.monotonic()
        self._next_rejoin = 0.0  # no new consumer before this (back-off after a failed one)
        self._last_member_check = 0.0
        self.source = parts.source
        self._last_commit = 0.0
        self._last_lag = 0.0
        self.loop_heartbeat = time.monotonic()
        metrics.inference_batch_seconds.set_function(self.inference_stuck_s)
        self._policy = EventPolicy(
            max_event_bytes=settings.max_event_bytes,
            allowed_buckets=frozenset(settings.allowed_buckets) or None,
            max_records=settings.max_records_per_event,
            asset_id_binding=settings.asset_id_binding,
        )
        self._items = 0  # work items between dispatch and completion (backpressure counts them)
        self._messages = 0  # messages between dispatch and completion, on any partition
        # the priority lanes (consumers.lanes): the backfill topic, served with what uploads
        # leave; messages in flight per lane, counted as _messages is
        self._topics = tuple(settings.input_topics())
        self._backfill_topic = self._topics[1] if len(self._topics) > 1 else None
        self._lanes = LanePolicy(
            LaneLimits(
                backfill_max_in_flight=settings.backfill_max_in_flight,
                min_share=settings.backfill_min_share,
                quiet_s=settings.backfill_quiet_ms / 1000,
            )
        )
        self._lane_messages = {UPLOAD: 0, BACKFILL: 0}
        self._backfill_held = False  # the backfill partitions paused for the upload lane
        workers = settings.decode_parallelism()
        ready: queue.Queue[WorkItem] = LaneQueue(maxsize=2 * settings.batch_size + workers)
        self._to_store: queue.Queue[tuple[WorkItem, AssetResult | None]] = queue.Queue()
        out = Outlets(fail=self._fail, finish=self._finish, metrics=metrics)
        self._dlq = DeadLetterer(
            producer=parts.producer, topic=settings.dlq_topic, out=out, abandon=self._abandon
        )
        self._preparer = Preparer(
            fetch=parts.fetch,
            decode=parts.decode,
            ready=ready,
            out=out,
            fetch_workers=settings.fetch_workers,
            decode_workers=workers,
            draining=self.stopping,
            retry=RetryPolicy(settings.retry_max_attempts, settings.retry_budget_s),
            raw_bytes=ByteBudget(settings.max_raw_bytes_in_flight),
            readable=parts.object_readable,
            removed=self._to_store,
            superseded=self._removed_later,
        )
        self._inferencer = Inferencer(
            fleet=parts.fleet,
            ready=ready,
            to_store=self._to_store,
            out=out,
            fatal=self._on_fatal,
            batch_size=settings.batch_size,
            batch_wait_s=settings.batch_wait_ms / 1000,
            max_failures=settings.max_inference_failures,
            abandon=self._abandon,
            reload=parts.reload,
            stored=stored_reuse(parts.reuse, parts.embeddings),
            dedup=parts.dedup,
        )
        self._storer = Storer(
            store=parts.store,
            producer=parts.producer,
            results_topic=settings.results_topic,
            inbox=self._to_store,
            out=out,
            abandon=self._abandon,
            max_rejections=settings.max_inference_failures,
            review=parts.review,
            embeddings=parts.embeddings,
        )

    # -- worker callbacks (any thread) --------------------------------------------------
    def _finish(self, item: WorkItem, outcome: str) -> None:
        self._completions.put((item, outcome))

    def _fail(self, item: WorkItem, error: PermanentError) -> None:
        """Dead-letter ``item``: at once when its message carries only it, else once for the
        whole message when its last item is done (one copy of the value, however many of its
        records failed)."""
        if error.reason in (Reason.OBJECT_NOT_FOUND, Reason.ACCESS_DENIED):
            log.info(
                "object unavailable", extra={"asset_id": item.asset_id, "detail": error.message}
            )
        error = public_error(error, self.settings.dlq_reveal_missing)
        if item.message.items > 1:
            item.message.failures.append((item.asset_id, error))
            self.metrics.dlq.labels(error.reason.value).inc()
            self._finish(item, "failed")
        else:
            self._dlq.put(item, error)

    def _removed_later(self, request: AssetRequest) -> bool:
        """Whether a removal newer than ``request`` was applied to either reading of its key,
        or waits for ``request`` in the key gate (polled here after it: it cannot be applied
        before the create is done). Called from the fetch threads."""
        if self._gate.removal_waits(request.asset_id, request.sequencer):
            return True
        ids = [request.asset_id]
        if request.alternative_key is not None:
            ids.append(request.with_key(request.alternative_key).asset_id)
        return self.parts.store.removed_later(ids, request.sequencer)

    def _on_fatal(self, reason: str) -> None:
        log.critical("stopping: %s", reason)
        self.fatal_reason = reason
        self.stopping.set()

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Consume until :attr:`stopping` is set, then drain, commit and leave the group."""
        for stage in (self._dlq, self._preparer, self._inferencer, self._storer):
            stage.on_crash = self._on_fatal
            stage.start()
        try:
            while not self.stopping.is_set():
                self._tick(poll_ms=100)
            self._drain()
        finally:
            self._abandon.set()
            self._preparer.shutdown()
            self.source.close()
        return EXIT_FATAL if self.fatal_reason else EXIT_OK

    def _tick(self, poll_ms: int) -> None:
        now = time.monotonic()
        if not self._paused and self._rebalancing_since is None:
            self._unpaused_s += now - self.loop_heartbeat  # paused time holds the stall clocks
        self.loop_heartbeat = now
        self._rejoin_if_stuck()
        self._apply_completions()
        self._commit(force=False)
        paused = self.stopping.is_set() or max(self.in_flight, self._items) >= (
            self.settings.max_in_flight
        )
        self._paused = paused
        held: tuple[str, ...] = self._topics if paused else ()
        self._backfill_held = not paused and self._backfill_allowance(now) == 0
        if self._backfill_held and self._backfill_topic is not None:
            held = (self._backfill_topic,)
        self.metrics.paused_partitions.set(self.source.pause_topics(held))
        records = self.source.poll(poll_ms)
        # the listener ran inside that poll: its events apply before the poll's records (a
        # partition lost and assigned again restarts from the last commit)
        self._apply_rebalances()
        if paused and records:
            # a partition assigned inside this poll starts unpaused: hand its records back
            # rather than go past max_in_flight (or take new work while draining)
            self.source.rewind(records)
            self.metrics.rewound_records.inc(len(records))
        elif records:
            self._dispatch_lanes(records)
        self._update_gauges()

    def _lane(self, topic: str) -> str:
        return BACKFILL if topic == self._backfill_topic else UPLOAD

    def _backfill_allowance(self, now: float) -> int:
        if self._backfill_topic is None:
            return 0
        return self._lanes.backfill_allowance(
            self._lane_messages[UPLOAD], self._lane_messages[BACKFILL], now
        )

    def _dispatch_lanes(self, records: Sequence[PolledRecord]) -> None:
        """The upload lane's records, then as many of the backfill lane's as the lane policy
        allows now; the rest of the backfill records are handed back (rewound: each
        partition's records come in offset order, so what is handed back of a partition
        follows all that was taken of it)."""
        backfill = [r for r in records if r.topic == self._backfill_topic]
        uploads = [r for r in records if r.topic != self._backfill_topic] if backfill else records
        for record in uploads:
            self._dispatch(record)
        now = time.monotonic()
        self._lanes.note_dispatched(UPLOAD, len(uploads), now)
        if not backfill:
            return
        allowance = self._backfill_allowance(now)
        taken, handed_back = backfill[:allowance], backfill[allowance:]
        if handed_back:
            self.source.rewind(handed_back)
            self.metrics.rewound_records.inc(len(handed_back))
        for record in taken:
            self._dispatch(record)
        self._lanes.note_dispatched(BACKFILL, len(taken), now)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout_s
        log.info("draining", extra={"in_flight": self.in_flight})
        while self.in_flight and time.monotonic() < deadline and not self.fatal_reason:
            self._tick(poll_ms=50)
        self._apply_completions()
        self._commit(force=True)
        log.info(
            "drained",
            extra={
                "in_flight": self.in_flight,
                "committed": {f"{tp.topic}/{tp.partition}": o for tp, o in self._committed.items()},
            },
        )

    def _dispatch(self, record: PolledRecord) -> None:
        tp = Partition(record.topic, record.partition)
        if tp not in self.source.assignment():
            return
        position = SourcePosition(record.topic, record.partition, record.offset)
        message = Message(position, record.key, record.value, record.timestamp)
        message.backfill = record.topic == self._backfill_topic
        try:
            self._watermarks.track(tp, record.offset)
        except ValueError:
            log.warning(
                "partition rewound; reprocessing from here",
                extra={"partition": str(tp), "offset": record.offset},
            )
            self._forget({tp})
            self._watermarks.track(tp, record.offset)
        self._fetched[tp] = record.offset + 1
        self._messages += 1
        self._lane_messages[self._lane(record.topic)] += 1
        try:
            requests = parse_event(record.value, record.key, self._policy, self._count_ignored)
        except PermanentError as exc:
            message.pending = message.items = 1
            self._items += 1
            self._dlq.put(WorkItem(message, None), exc)
            return
        if not requests:
            self._done_message(message)
            return
        message.pending = message.items = len(requests)
        self._items += len(requests)
        for request in requests:
            item = WorkItem(message, request)
            if self._gate.admit(item) is not None:
                self._start(item)

    def _count_ignored(self, kind: str) -> None:
        self.metrics.ignored_records.labels(kind).inc()

    def _start(self, item: WorkItem) -> None:
        request = item.request
        if isinstance(request, AssetRemoval):
            if self.parts.object_readable is None:  # unconfirmed: the first reading only
                item.request = replace(request, alternative_key=None)
                self._to_store.put((item, None))
            else:
                self._preparer.submit(item)  # confirmed gone first
            return
        assert isinstance(request, AssetRequest)
        unknown = set(request.functions or ()) - set(self.parts.fleet.functions)
        if unknown:
            self._fail(
                item,
                PermanentError(
                    Reason.UNKNOWN_FUNCTION,
                    f"functions {sorted(unknown)} are not in the fleet"
                    f" (known: {sorted(self.parts.fleet.functions)})",
                ),
            )
            return
        self._preparer.submit(item)

    def _apply_completions(self) -> None:
        while True:
            try:
                item, outcome = self._completions.get_nowait()
            except queue.Empty:
                return
            self._items -= 1
            self._last_done = time.monotonic()
            if item.request is not None and not item.aggregate:
                following = self._gate.release(item)
                if following is not None:
                    self._start(following)
            if outcome == "abandoned":
                continue
            if outcome == "failed":  # one of several records; dead-lettered with the message
                outcome = "dead_lettered"
            if not item.aggregate:
                self.metrics.events.labels(outcome).inc()
            message = item.message
            message.pending -= 1
            if message.pending == 0 and message.failures and not item.aggregate:
                self._dead_letter_message(message)
            elif message.pending == 0:
                self._done_message(message)

    def _dead_letter_message(self, message: Message) -> None:
        """One dead letter for a message whose records failed, its reasons aggregated."""
        item = WorkItem(message, None, aggregate=True)
        message.pending = 1
        self._items += 1
        self._dlq.put(item, aggregate_failures(message.failures, message.items))

    def _done_message(self, message: Message) -> None:
        pos = message.position
        assert pos is not None  # every message of the loop comes from a polled record
        self._messages -= 1
        lane = self._lane(pos.topic)
        self._lane_messages[lane] -= 1
        if message.timestamp_ms is not None and message.timestamp_ms > 0:
            age = time.time() - message.timestamp_ms / 1000
            self.metrics.lane_latency.labels(lane).observe(max(0.0, age))
        self._watermarks.done(Partition(pos.topic, pos.partition), pos.offset)

    def _apply_rebalances(self) -> None:
        for event in self.source.take_rebalance_events():
            log.info(
                "rebalance",
                extra={
                    "kind": event.kind,
                    "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in event.partitions),
                },
            )
            if event.kind == "lost":
                # the member was dropped from the group: kafka-python forgot its positions, so
                # if these come back they restart from the last commit, as for another owner
                self._forget(set(event.partitions))
                self._revoking -= event.partitions
                self._rebalancing_since = self._rebalancing_since or time.monotonic()
            elif event.kind == "revoked":
                self._revoking |= event.partitions
                self._rebalancing_since = self._rebalancing_since or time.monotonic()
            else:
                self._forget(self._revoking - event.partitions)
                self._revoking = set()
                self._rebalancing_since = None
                for tp in event.partitions:  # the stall clock runs from the assignment on
                    self._stall_marks[tp] = (None, self._unpaused_s)

    def _forget(self, partitions: set[Partition]) -> None:
        """Drop the state of partitions another member now owns; their late completions are
        ignored and the new owner reprocesses from our last commit (idempotently).

        kafka-python keeps the fetch position of a partition revoked and assigned again in one
        eager rebalance, so such a partition keeps its watermark: nothing is redelivered to
        re-track the messages already in flight.
        """
        self._watermarks.revoke(partitions)
        for tp in partitions:
            self._committed.pop(tp, None)
            self._fetched.pop(tp, None)
            self._stall_marks.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition), self._lane(tp.topic))

    @property
    def in_flight(self) -> int:
        """Messages polled and not yet stored or dead-lettered, whoever owns their partition
        now: the work of a partition revoked or lost still runs until it completes (its
        completion is then ignored for commits), and a partition that comes back is polled
        again from the last commit, so both copies count until each is done."""
        return self._messages

    def _commit(self, force: bool) -> None:
        now = time.monotonic()
        if not force and (now - self._last_commit) * 1000 < self.settings.commit_interval_ms:
            return
        self._last_commit = now
        if self._revoking:
            return  # mid-rebalance: the commit would fail; the next turn after assignment does it
        offsets = self._watermarks.commit_offsets()
        if not offsets:
            return
        if self.source.commit(offsets):
            self._committed.update(offsets)
        else:
            self._watermarks.commit_failed(offsets)
            self.metrics.transient_errors.labels("commit").inc()

    def _update_gauges(self) -> None:
        self.metrics.in_flight.set(self.in_flight)
        now = time.monotonic()
        if now - self._last_lag < 2.0:
            return
        self._last_lag = now
        if self._revoking or self._rebalancing_since is not None:
            # no ListOffsets on the loop while the join needs its polls; the stall clocks do
            # not run either: nothing is fetched during a rebalance
            self._longest_stall_s, self._lag_since = 0.0, None
            self.metrics.stalled_partitions.set(0)
            return
        self._check_partitions(self.source.end_offsets(), self.source.committed_offsets(), now)

    def _check_partitions(
        self, ends: Mapping[Partition, int], starts: Mapping[Partition, int], now: float
    ) -> None:
        """Lag of every assigned partition (end offset minus the last commit, ours or the
        group's from before the assignment), and the stall detector: a partition with records
        waiting past the next offset polled stalls while no poll returns it, counted on the
        clock that runs only while the loop is unpaused (paused for backpressure is not
        stalled, and does not restart the clock either)."""
        stalled, longest, lagging = 0, 0.0, False
        for tp in self.source.assignment():
            end = ends.get(tp)
            if end is None:
                continue
            committed = max(self._committed.get(tp, -1), starts.get(tp, -1))
            if committed >= 0:
                lag = max(0, end - committed)
                lagging = lagging or lag > 0
                lane = self._lane(tp.topic)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition), lane).set(lag)
            polled = self._fetched.get(tp)
            following = max(polled if polled is not None else -1, committed)
            mark = self._stall_marks.get(tp)
            if self._backfill_held and tp.topic == self._backfill_topic:
                # held for the upload lane, like backpressure: not stalled
                self._stall_marks[tp] = (polled, self._unpaused_s)
                continue
            if following < 0 or end <= following or mark is None or mark[0] != polled:
                self._stall_marks[tp] = (polled, self._unpaused_s)  # moved, or nothing waits
                continue
            stall = self._unpaused_s - mark[1]
            longest = max(longest, stall)
            stalled += stall >= self.settings.partition_stall_s
        self._longest_stall_s = longest
        self.metrics.stalled_partitions.set(stalled)
        self._lag_since = (self._lag_since or now) if lagging else None

    def _rejoin_if_stuck(self) -> None:
        """Leave and rejoin with a new consumer when a (re)join has not ended within
        ``rejoin_stuck_s`` (120 s), or when unpaused partitions with a backlog returned nothing
        for as long. kafka-python 3.0.12 was seen to stay revoked for minutes, polled all along,
        until the broker evicted it, and to stop fetching a partition for good (see
        :func:`consumers.source.release_parked_records`); a fresh consumer joins and fetches at
        once. Work of the partitions we held is forgotten: it is redelivered from the last
        commit.

        The old consumer is closed (it leaves the group) before the new one is built: built
        first, the new member would join a group the old one still sits in, and the old one's
        leave would then rebalance the group a second time."""
        now = time.monotonic()
        if self.parts.new_source is None or self.stopping.is_set() or now < self._next_rejoin:
            return
        if self.source is _DETACHED:
            self._attach_new_source(now, "joining again")
            return
        stuck = "group (re)join" if self.rebalancing_s() >= self.settings.rejoin_stuck_s else None
        if stuck is None and self._join_looks_lost(now):
            stuck = "group (re)join (the broker dropped the member)"
        if stuck is None and self.fetch_stalled_s() >= self.settings.rejoin_stuck_s:
            stuck = "fetching (a backlog and nothing polled)"
        if stuck is None:
            return
        waited = round(max(self.rebalancing_s(), self.fetch_stalled_s()), 1)
        self._forget(set(self._watermarks.partitions()) | self._revoking)
        self._revoking = set()
        with contextlib.suppress(Exception):
            self.source.close()
        self.source = _DETACHED
        self._rebalancing_since, self._longest_stall_s = now, 0.0  # the new member joins
        self._attach_new_source(now, f"{stuck} was stuck", waited_s=waited)

    def _attach_new_source(self, now: float, why: str, **extra: Any) -> None:
        """Build the next consumer; when that fails (the broker unreachable), stay detached and
        try again after a back-off."""
        assert self.parts.new_source is not None
        try:
            self.source = self.parts.new_source()
        except Exception:  # noqa: BLE001 - broker unreachable: try again later
            self._next_rejoin = now + _REBUILD_BACKOFF_S
            log.warning(f"{why}; a new consumer could not be made yet", exc_info=True)
            return
        self._rebalancing_since = now  # its join starts now
        log.warning(f"{why}; joined with a new consumer", extra=extra)

    def _join_looks_lost(self, now: float) -> bool:
        """A join longer than one session whose member the broker no longer lists (asked at
        most every 5 s)."""
        session_s = self.settings.session_timeout_ms / 1000
        if self.rebalancing_s() < session_s + 5 or now - self._last_member_check < 5:
            return False
        self._last_member_check = now
        return self.source.member_lost()

    def rebalancing_s(self) -> float:
        """Seconds since this member started (re)joining the group without an assignment yet
        (0 when it holds one). The broker ends a rebalance within its timeout, so a long one
        means a client stuck in it (seen with kafka-python 3.x): liveness fails on it."""
        since = self._rebalancing_since
        return 0.0 if since is None else time.monotonic() - since

    def fetch_stalled_s(self) -> float:
        """The longest stall of an assigned partition: seconds of unpaused loop time that it
        has had records waiting on the broker while no poll returned any of them (0 when none
        is stalled; updated every 2 s). Liveness fails on a long one."""
        return self._longest_stall_s

    def idle_with_lag_s(self) -> float:
        """Seconds that assigned partitions have had lag while no work item completed (0
        when nothing lags, and during a rebalance); liveness fails on a long one."""
        since = self._lag_since
        if since is None or self._rebalancing_since is not None:
            return 0.0
        return time.monotonic() - max(since, self._last_done)

    def inference_stuck_s(self) -> float:
        """Seconds the current inference batch has been running (0 when idle)."""
        since = self._inferencer.busy_since
        return 0.0 if since is None else time.monotonic() - since
