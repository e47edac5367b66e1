"""The consume loop's bookkeeping (offsets, rebalances, backpressure), with small fakes of its
adapters: this checks pure logic; the real broker, S3 and store are covered by the e2e tests."""

from __future__ import annotations

import json
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pytest
from kafka import TopicPartition

from consumers.decode import DecodedImage
from consumers.domain import PermanentError, Reason, TransientError
from consumers.metrics import Metrics
from consumers.pipeline import Parts, Pipeline
from consumers.ports import (
    Fleet,
    Partition,
    PolledRecord,
    RebalanceEvent,
    RecordProducer,
    Source,
    Store,
)
from consumers.settings import Settings
from consumers.sinks import RecordRejected
from consumers.store.errors import SchemaMissing

Record = namedtuple("Record", "topic partition offset key value timestamp")
TP0, TP1 = TopicPartition("assets", 0), TopicPartition("assets", 1)


class FakeSource(Source):
    """Hands out records per partition, honours pause, records commits."""

    def __init__(self, records: dict[TopicPartition, list[Record]]) -> None:
        self.pending = {tp: list(rs) for tp, rs in records.items()}
        self.assigned = set(records)
        self.paused: set[TopicPartition] = set()
        self.events: list[RebalanceEvent] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.max_paused = 0
        self.lost = False  # what member_lost() answers
        self.assign_in_poll: list[tuple[TopicPartition, list[Record]]] = []
        self.ends = {tp: len(rs) for tp, rs in records.items()}
        self.stall_after: int | None = None  # hand out this many records, then none (a client
        self.handed = 0  # that stopped fetching)
        self.rewound = 0
        self.in_poll: list[Callable[[], None]] = []  # one runs inside each poll (the listener)
        self.closed = False
        self.log: list[str] | None = None  # "closed" is appended here on close()
        self.withheld: set[TopicPartition] = set()  # never returned by poll() (a client bug)

    def poll(self, timeout_ms: int) -> list[Record]:
        if self.in_poll:
            self.in_poll.pop(0)()
        if self.stall_after is not None and self.handed >= self.stall_after:
            time.sleep(0.005)
            return []
        if self.assign_in_poll:
            # as kafka-python: a rebalance inside poll(); new partitions start unpaused
            tp, records = self.assign_in_poll.pop(0)
            self.events += [
                RebalanceEvent("revoked", frozenset(self.assigned)),
                RebalanceEvent("assigned", frozenset(self.assigned | {tp})),
            ]
            self.assigned.add(tp)
            self.pending[tp] = list(records)
            self.ends[tp] = len(records)
            self.paused.discard(tp)
        out = []
        for tp in sorted(self.assigned - self.paused - self.withheld):
            out += self.pending[tp][:4]
            self.pending[tp] = self.pending[tp][4:]
        if not out:
            time.sleep(0.005)
        self.handed += len(out)
        return out

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        events, self.events = self.events, []
        return events

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def rewind(self, records: Sequence[PolledRecord]) -> int:
        for record in sorted(records, key=lambda r: r.offset, reverse=True):
            # the pipeline hands back only records this fake polled
            self.pending[TopicPartition(record.topic, record.partition)].insert(
                0, cast(Record, record)
            )
        self.rewound += len(records)
        return len({(r.topic, r.partition) for r in records})

    def set_paused(self, paused: bool) -> int:
        self.paused = set(self.assigned) if paused else set()
        self.max_paused = max(self.max_paused, len(self.paused))
        return len(self.paused)

    def pause_topics(self, topics: Collection[str]) -> int:
        self.paused = {tp for tp in self.assigned if tp.topic in topics}
        self.max_paused = max(self.max_paused, len(self.paused))
        return len(self.paused)

    def commit(self, offsets: Mapping[Partition, int]) -> bool:
        self.commits.append(dict(offsets))
        return True

    def end_offsets(self) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in self.assigned}

    def committed_offsets(self) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in self.assigned}  # a new group, from the start

    def close(self) -> None:
        self.closed = True
        if self.log is not None:
            self.log.append("closed")

    @property
    def joined(self) -> bool:
        return True

    def member_lost(self) -> bool:
        return self.lost

    def last_commit(self, tp: TopicPartition) -> int | None:
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)


class FakeFleet(Fleet):
    input_size = 8
    functions = {"f": None}

    def __init__(self) -> None:
        self.gate: dict[str, threading.Event] = {}

    def predict(
        self, images: Any, sizes: Any, functions: Any = None, tiles: Any = None
    ) -> list[dict]:
        return [
            {
                "f": {
                    "type": "classify",
                    "version": "v",
                    "label": "a",
                    "score": 1.0,
                    "scores": {"a": 1.0},
                }
            }
            for _ in images
        ]


class FakeProducer(RecordProducer):
    def __init__(self, max_value: int | None = None) -> None:
        self.sent: list[Any] = []
        self.max_value = max_value  # larger values are refused, as a broker would

    def send_all(self, records: Any) -> None:
        refused = [
            i
            for i, r in enumerate(records)
            if self.max_value is not None and len(r.value or b"") > self.max_value
        ]
        self.sent += [r for i, r in enumerate(records) if i not in refused]
        if refused:
            raise RecordRejected("too large", refused)

    def close(self, timeout_s: float = 10.0) -> None:
        pass


class FakeStore(Store):
    def __init__(self, refuse: str | None = None, schema_ok: bool = True) -> None:
        self.saved: list[str] = []
        self.removed: list[str] = []
        self.refuse, self.schema_ok = refuse, schema_ok

    def save(self, results: Any) -> None:
        if self.refuse and any(self.refuse in r.asset_id for r in results):
            raise ValueError("a value the database refuses")
        self.saved += [r.asset_id for r in results]

    def remove(
        self,
        asset_ids: Any,
        source: Any,
        *,
        uri: str | None = None,
        sequencer: str | None = None,
    ) -> int:
        self.removed += list(asset_ids)
        return 0

    def removed_later(self, asset_ids: Any, sequencer: str | None) -> bool:
        return False

    def verify_schema(self) -> None:
        if not self.schema_ok:
            raise SchemaMissing("no tables")

    def ping(self) -> None:
        pass


def _records(tp: TopicPartition, n: int) -> list[Record]:
    return [
        Record(
            tp.topic,
            tp.partition,
            i,
            None,
            json.dumps(
                {"asset_id": f"s3://bkt/{tp.partition}-{i}", "uri": f"s3://bkt/{tp.partition}-{i}"}
            ).encode(),
            0,
        )
        for i in range(n)
    ]


def _pipeline(
    source: FakeSource,
    fetch: Any = None,
    store: FakeStore | None = None,
    object_readable: Any = None,
    **settings: Any,
) -> tuple[Pipeline, FakeStore]:
    store = store or FakeStore()
    parts = Parts(
        source=source,
        fleet=FakeFleet(),
        store=store,
        producer=FakeProducer(),  # type: ignore[arg-type]
        fetch=fetch or (lambda request, _reserve: b"x"),
        decode=lambda data: DecodedImage(np.zeros((8, 8, 3), np.uint8), 10, 10, "PNG"),
        object_readable=object_readable,
    )
    cfg = Settings(
        results_topic="",
        commit_interval_ms=0,
        batch_wait_ms=1,
        fetch_workers=2,
        decode_workers=1,
        **settings,
    )
    return Pipeline(cfg, parts, Metrics()), store


def _wait_until_paused(source: FakeSource, timeout_s: float = 20) -> None:
    """Until the loop has paused its partitions, then a few more turns (it stays paused)."""
    deadline = time.monotonic() + timeout_s
    while source.max_paused == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)


def _run_until(pipeline: Pipeline, done: Any, timeout_s: float = 20) -> None:
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    pipeline.stopping.set()
    thread.join(30)
    assert done(), "pipeline did not finish its work"


def test_commits_reach_the_end_of_every_partition():
    source = FakeSource({TP0: _records(TP0, 30), TP1: _records(TP1, 20)})
    pipeline, store = _pipeline(source)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 30 and source.last_commit(TP1) == 20)
    assert len(store.saved) == len(set(store.saved)) == 50
    assert pipeline.parts.producer.sent == []  # nothing dead-lettered


def test_a_slow_message_holds_back_the_commit_of_its_partition_only():
    release = threading.Event()

    def fetch(request: Any, _reserve: Any) -> bytes:
        if request.asset_id == "s3://bkt/0-3":
            release.wait(10)
        return b"x"

    source = FakeSource({TP0: _records(TP0, 10), TP1: _records(TP1, 10)})
    pipeline, _ = _pipeline(source, fetch=fetch)
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while source.last_commit(TP1) != 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.last_commit(TP1) == 10
        assert all(c.get(TP0, 0) <= 3 for c in source.commits), source.commits
    finally:
        release.set()
        deadline = time.monotonic() + 20
        while source.last_commit(TP0) != 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        pipeline.stopping.set()
        thread.join(30)
    assert source.last_commit(TP0) == 10


def test_partitions_revoked_and_reassigned_in_one_rebalance_keep_their_offsets():
    gate = threading.Event()
    source = FakeSource({TP0: _records(TP0, 8)})
    pipeline, _ = _pipeline(source, fetch=lambda request, _reserve: gate.wait(10) and b"x")
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while pipeline.in_flight < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        source.events += [
            RebalanceEvent("revoked", frozenset({TP0})),
            RebalanceEvent("assigned", frozenset({TP0})),
        ]
        time.sleep(0.3)
        gate.set()
        deadline = time.monotonic() + 20
        while source.last_commit(TP0) != 8 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.set()
        pipeline.stopping.set()
        thread.join(30)
    assert source.last_commit(TP0) == 8


@pytest.mark.parametrize("max_in_flight", [100, 10])
def test_a_lost_then_reassigned_partition_leaves_no_message_in_flight_uncounted(
    max_in_flight: int,
):
    """kafka-python calls on_partitions_lost when the member was dropped from the group, and
    on_partitions_assigned when it joins again, inside one poll; a partition that comes back
    restarts from the last commit, while the work polled before is still running. Every
    message between dispatch and completion counts, both copies, and the bound holds."""
    gate = threading.Event()
    records = _records(TP0, 8)
    source = FakeSource({TP0: records})
    pipeline, store = _pipeline(
        source, fetch=lambda request, _reserve: gate.wait(20) and b"x", max_in_flight=max_in_flight
    )

    def lost_then_assigned_again() -> None:
        source.events += [
            RebalanceEvent("lost", frozenset({TP0})),
            RebalanceEvent("assigned", frozenset({TP0})),
        ]
        source.pending[TP0] = list(records)  # from the last commit: nothing committed yet

    thread = threading.Thread(target=pipeline.run)
    thread.start()
    handed_out: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while pipeline.in_flight < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipeline.in_flight == 8
        source.in_poll.append(lost_then_assigned_again)
        deadline = time.monotonic() + 10  # until the loop polled what it may take again
        expected = 8  # polls of 4 records are taken while fewer than max_in_flight are in flight
        while expected < min(16, max_in_flight):
            expected += 4
        while source.handed - source.rewound < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(30):  # nothing completes while the gate is shut: the count is exact
            handed_out.append(source.handed - source.rewound)
            assert pipeline.in_flight == handed_out[-1], (pipeline.in_flight, handed_out)
            time.sleep(0.01)
        assert handed_out[-1] == expected
        assert pipeline.in_flight <= max_in_flight + 4  # max_in_flight + one poll
    finally:
        gate.set()
        deadline = time.monotonic() + 20
        while (source.last_commit(TP0) != 8 or pipeline.in_flight) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        pipeline.stopping.set()
        thread.join(30)
    assert source.last_commit(TP0) == 8
    assert pipeline.in_flight == 0
    assert set(store.saved) == {f"s3://bkt/0-{i}" for i in range(8)}


def test_no_end_offsets_are_asked_while_a_rebalance_is_in_progress():
    """ListOffsets blocks for up to 2 s; during a rebalance the loop owes the join its polls."""
    asked: list[str] = []

    class CountingSource(FakeSource):
        def end_offsets(self) -> dict[TopicPartition, int]:
            asked.append("end_offsets")
            return super().end_offsets()

    source = CountingSource({TP0: []})
    pipeline, _ = _pipeline(source)

    def turn(*events: RebalanceEvent) -> int:
        source.events += events
        pipeline._last_lag = 0.0  # the lag refresh is due at every turn here
        pipeline._tick(poll_ms=0)
        return len(asked)

    assert turn() == 0  # joining, not assigned yet
    assert turn(RebalanceEvent("assigned", frozenset({TP0}))) == 1
    assert turn(RebalanceEvent("revoked", frozenset({TP0}))) == 1
    assert turn() == 1  # still rebalancing
    assert turn(RebalanceEvent("lost", frozenset({TP0}))) == 1
    assert turn(RebalanceEvent("assigned", frozenset({TP0}))) == 2


def test_a_partition_no_poll_returns_is_stalled_but_not_while_paused_for_backpressure():
    """Every assigned partition is watched from its assignment on, fetched or not; the stall
    clock runs only while the loop is unpaused, so backpressure is never taken for a stall
    (and does not restart the clock)."""
    gate = threading.Event()

    def fetch(request: Any, _reserve: Any) -> bytes:
        gate.wait(30)
        return b"x"

    source = FakeSource({TP0: _records(TP0, 8), TP1: _records(TP1, 8)})
    source.withheld = {TP1}  # lag from the start, never polled
    source.events.append(RebalanceEvent("assigned", frozenset({TP0, TP1})))
    pipeline, store = _pipeline(source, fetch=fetch, max_in_flight=2, partition_stall_s=1.5)
    metrics = pipeline.metrics.registry
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        _wait_until_paused(source)
        time.sleep(4.5)  # three times partition_stall_s, paused all along
        assert metrics.get_sample_value("tagfleet_paused_partitions") == 2
        assert metrics.get_sample_value("tagfleet_stalled_partitions") == 0
        assert pipeline.fetch_stalled_s() < 1.5
        gate.set()  # unpaused: TP0 drains, TP1 is still never returned
        deadline = time.monotonic() + 20
        while metrics.get_sample_value("tagfleet_stalled_partitions") != 1:
            assert time.monotonic() < deadline, "the withheld partition never counted as stalled"
            time.sleep(0.05)
        assert pipeline.fetch_stalled_s() >= 1.5
        assert (
            metrics.get_sample_value(
                "tagfleet_consumer_lag", {"topic": "assets", "partition": "1", "lane": "upload"}
            )
            == 8
        )
        assert len(store.saved) == 8  # TP0's, all of them
    finally:
        pipeline.stopping.set()
        thread.join(30)


def test_a_partition_taken_by_another_member_is_no_longer_committed():
    gate = threading.Event()
    source = FakeSource({TP0: _records(TP0, 5), TP1: _records(TP1, 5)})
    pipeline, _ = _pipeline(source, fetch=lambda request, _reserve: gate.wait(10) and b"x")
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while pipeline.in_flight < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        source.assigned = {TP0}
        source.events += [
            RebalanceEvent("revoked", frozenset({TP0, TP1})),
            RebalanceEvent("assigned", frozenset({TP0})),
        ]
        time.sleep(0.3)
        gate.set()
        deadline = time.monotonic() + 20
        while source.last_commit(TP0) != 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.set()
        pipeline.stopping.set()
        thread.join(30)
    assert source.last_commit(TP0) == 5
    assert all(c.get(TP1, 0) == 0 for c in source.commits), source.commits  # never past its start


@pytest.mark.parametrize("limit", [3, 10])
def test_backpressure_pauses_partitions_instead_of_buffering(limit: int):
    gate = threading.Event()
    source = FakeSource({TP0: _records(TP0, 40)})
    pipeline, _ = _pipeline(
        source, fetch=lambda request, _reserve: gate.wait(10) and b"x", max_in_flight=limit
    )
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        _wait_until_paused(source)
        assert source.max_paused == 1
        assert limit <= pipeline.in_flight <= limit + 4  # at most one poll beyond the bound
    finally:
        gate.set()
        deadline = time.monotonic() + 20
        while source.last_commit(TP0) != 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        pipeline.stopping.set()
        thread.join(30)
    assert source.last_commit(TP0) == 40


def test_partitions_assigned_while_saturated_do_not_go_past_the_bound():
    """kafka-python may return records of a partition assigned inside poll() before the loop
    re-pauses it; those are sought back, not dispatched, however many rebalances follow."""
    gate = threading.Event()
    extra = [TopicPartition("assets", p) for p in range(2, 7)]
    source = FakeSource({TP0: _records(TP0, 20)})
    pipeline, store = _pipeline(
        source, fetch=lambda request, _reserve: gate.wait(10) and b"x", max_in_flight=3
    )
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    peak = 0
    try:
        deadline = time.monotonic() + 10
        while pipeline.in_flight < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        for tp in extra:  # one rebalance after another, each assigning a fresh partition
            source.assign_in_poll.append((tp, _records(tp, 10)))
            deadline = time.monotonic() + 10
            while source.assign_in_poll and time.monotonic() < deadline:
                peak = max(peak, pipeline.in_flight)
                time.sleep(0.005)
            for _ in range(20):
                peak = max(peak, pipeline.in_flight)
                time.sleep(0.005)
        assert source.assign_in_poll == []
        assert peak <= 3 + 4, f"in flight peaked at {peak}"
        rewound = pipeline.metrics.registry.get_sample_value("tagfleet_rewound_records_total")
        assert rewound and rewound > 0  # the fake did hand out records of paused partitions
    finally:
        gate.set()
        deadline = time.monotonic() + 20
        every = [TP0, *extra]
        while time.monotonic() < deadline and any(
            source.last_commit(tp) != (20 if tp == TP0 else 10) for tp in every
        ):
            time.sleep(0.01)
        pipeline.stopping.set()
        thread.join(30)
    assert [source.last_commit(tp) for tp in every] == [20] + [10] * len(extra)
    assert len(store.saved) == 20 + 10 * len(extra)  # each record stored once


def test_a_crashing_stage_stops_the_service_instead_of_stalling_it():
    source = FakeSource({TP0: _records(TP0, 5)})
    pipeline, store = _pipeline(source)

    def broken_save(results: Any) -> None:
        raise RuntimeError("integrity error nobody expected")

    def broken_check() -> None:  # a bug on a path no item owns
        raise AttributeError("no such column in our own query")

    store.save = broken_save  # type: ignore[method-assign]
    store.verify_schema = broken_check  # type: ignore[method-assign]
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert pipeline.fatal_reason is not None and "store stage crashed" in pipeline.fatal_reason
    assert source.last_commit(TP0) in (None, 0)  # nothing past the failed write


def _run_until_replaced(
    old: FakeSource, timeout_s: float = 20, unreachable: int = 0, **settings: Any
) -> tuple[list[FakeSource], FakeStore]:
    """Run ``old`` until a fresh source (6 records of TP0), made through ``new_source``, has
    committed them all; returns the sources made and the store. The first ``unreachable``
    attempts to make one raise (the broker unreachable). Every source made is built after
    ``old`` was closed (it left the group first)."""
    fresh = FakeSource({TP0: _records(TP0, 6)})
    fresh.events.append(RebalanceEvent("assigned", frozenset({TP0})))  # it joins
    made: list[FakeSource] = []
    order: list[str] = []
    old.log = order

    def new_source() -> FakeSource:
        order.append("built" if len(order) > unreachable else "refused")
        if order[-1] == "refused":
            raise ConnectionError("no broker")
        made.append(fresh)
        return fresh

    pipeline, store = _pipeline(old, **settings)
    object.__setattr__(pipeline.parts, "new_source", new_source)  # Parts is frozen
    _run_until(pipeline, lambda: fresh.last_commit(TP0) == 6, timeout_s)
    assert order == ["closed"] + ["refused"] * unreachable + ["built"]  # closed, then built
    return made, store


def test_a_join_that_never_ends_is_retried_with_a_new_consumer():
    stuck = FakeSource({TP0: _records(TP0, 6)})
    stuck.events.append(RebalanceEvent("revoked", frozenset({TP0})))  # and never assigned again
    stuck.pending[TP0] = []
    made, store = _run_until_replaced(stuck, rejoin_stuck_s=1)
    assert len(made) == 1
    assert len(store.saved) == 6


def test_a_consumer_that_stops_fetching_a_backlog_is_replaced_by_a_new_one():
    stalled = FakeSource({TP0: _records(TP0, 6)})
    stalled.stall_after = 4
    stalled.events.append(RebalanceEvent("assigned", frozenset({TP0})))  # joined, then stalls
    made, store = _run_until_replaced(stalled, rejoin_stuck_s=1)
    assert len(made) == 1
    assert stalled.handed == 4  # it did hand out records before it stopped
    assert set(store.saved) == {f"s3://bkt/0-{i}" for i in range(6)}  # redelivered, all stored


def test_a_replacement_that_cannot_be_built_at_first_is_built_later_old_one_closed_first():
    stuck = FakeSource({TP0: _records(TP0, 6)})
    stuck.events.append(RebalanceEvent("revoked", frozenset({TP0})))  # and never assigned again
    stuck.pending[TP0] = []
    made, store = _run_until_replaced(stuck, timeout_s=30, unreachable=1, rejoin_stuck_s=1)
    assert len(made) == 1
    assert len(store.saved) == 6


def test_a_join_the_broker_dropped_is_retried_after_one_session_not_rejoin_stuck_s():
    lost = FakeSource({TP0: _records(TP0, 6)})
    lost.pending[TP0] = []  # joining, never assigned
    lost.lost = True
    # rejoin_stuck_s stays 120 s: only the broker's answer can end the join in time
    made, store = _run_until_replaced(lost, timeout_s=30, session_timeout_ms=1000)
    assert len(made) == 1
    assert len(store.saved) == 6


def _notification(tp: TopicPartition, offset: int, keys: list[str]) -> Record:
    records = [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "bkt"}, "object": {"key": k}}}
        for k in keys
    ]
    return Record(
        tp.topic, tp.partition, offset, None, json.dumps({"Records": records}).encode(), 0
    )


def _dead_letters(pipeline: Pipeline) -> list[dict[str, str]]:
    return [
        {k: v.decode() for k, v in r.headers}
        for r in cast(FakeProducer, pipeline.parts.producer).sent
        if r.headers
    ]


def test_backpressure_counts_work_items_not_messages():
    """Notifications of 50 records each: the loop pauses on the items they became, long
    before max_in_flight messages are in flight."""
    gate = threading.Event()
    records = [_notification(TP0, i, [f"{i}-{j}" for j in range(50)]) for i in range(20)]
    source = FakeSource({TP0: records})
    pipeline, store = _pipeline(
        source, fetch=lambda request, _reserve: gate.wait(10) and b"x", max_in_flight=10
    )
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        _wait_until_paused(source)
        assert source.max_paused == 1
        assert pipeline.in_flight <= 4  # one poll of 4 messages, 200 items, then paused
    finally:
        gate.set()
        deadline = time.monotonic() + 30
        while source.last_commit(TP0) != 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        pipeline.stopping.set()
        thread.join(30)
    assert source.last_commit(TP0) == 20 and len(store.saved) == 1000


def test_an_item_the_store_refuses_is_dead_lettered_and_its_batch_stored():
    source = FakeSource({TP0: _records(TP0, 40)})
    pipeline, store = _pipeline(source, store=FakeStore(refuse="s3://bkt/0-17"), batch_size=16)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 40)
    assert pipeline.fatal_reason is None
    assert sorted(store.saved) == sorted(f"s3://bkt/0-{i}" for i in range(40) if i != 17)
    [dead] = _dead_letters(pipeline)
    assert dead["tagfleet-reason"] == "store_rejected"
    assert dead["tagfleet-asset-id"] == "s3://bkt/0-17"
    assert "ValueError" in dead["tagfleet-message"]


def test_a_store_without_its_schema_stops_the_service_and_dead_letters_nothing():
    source = FakeSource({TP0: _records(TP0, 5)})
    pipeline, _ = _pipeline(source, store=FakeStore(refuse="s3://bkt/", schema_ok=False))
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert pipeline.fatal_reason and "SchemaMissing" in pipeline.fatal_reason
    assert _dead_letters(pipeline) == []
    assert all(c.get(TP0, 0) == 0 for c in source.commits)


def test_a_store_that_refuses_everything_stops_after_a_few_dead_letters():
    source = FakeSource({TP0: _records(TP0, 40)})
    pipeline, _ = _pipeline(source, store=FakeStore(refuse="s3://bkt/"), max_inference_failures=3)
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    thread.join(20)
    assert pipeline.fatal_reason and "refused 3 items in a row" in pipeline.fatal_reason
    assert len(_dead_letters(pipeline)) == 2


def test_a_message_whose_records_fail_is_dead_lettered_once_with_each_reason():
    def fetch(request: Any, _reserve: Any) -> bytes:
        if request.key.startswith("gone"):
            raise PermanentError(Reason.OBJECT_NOT_FOUND, "404")
        if request.key.startswith("secret"):
            raise PermanentError(Reason.ACCESS_DENIED, "403")
        return b"x"

    keys = ["a", "gone1", "b", "secret", "c", "gone2"]
    source = FakeSource({TP0: [_notification(TP0, 0, keys)]})
    pipeline, store = _pipeline(source, fetch=fetch)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 1)
    assert sorted(store.saved) == ["s3://bkt/a", "s3://bkt/b", "s3://bkt/c"]
    [dead] = _dead_letters(pipeline)
    assert dead["tagfleet-reason"] == "object_unavailable"  # missing and forbidden alike
    assert "3 of 6 records failed" in dead["tagfleet-message"]
    listed = json.loads(dead["tagfleet-failed-records"])
    assert sorted(r["asset_id"] for r in listed) == [
        "s3://bkt/gone1",
        "s3://bkt/gone2",
        "s3://bkt/secret",
    ]
    assert len(pipeline.parts.producer.sent) == 1  # one copy of the value, not three


def test_an_item_that_keeps_failing_while_others_succeed_is_dead_lettered():
    def fetch(request: Any, _reserve: Any) -> bytes:
        if request.asset_id == "s3://bkt/0-2":
            raise TransientError("HTTP 500 for this key only")
        return b"x"

    source = FakeSource({TP0: _records(TP0, 6)})
    pipeline, store = _pipeline(source, fetch=fetch, retry_max_attempts=3, retry_budget_s=0.2)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 6)
    [dead] = _dead_letters(pipeline)
    assert dead["tagfleet-reason"] == "retries_exhausted"
    assert "HTTP 500 for this key only" in dead["tagfleet-message"]
    assert len(store.saved) == 5


def test_an_outage_is_waited_out_not_dead_lettered():
    outage_until = time.monotonic() + 1.5

    def fetch(request: Any, _reserve: Any) -> bytes:
        if time.monotonic() < outage_until:
            raise TransientError("S3 is down")
        return b"x"

    source = FakeSource({TP0: _records(TP0, 6)})
    pipeline, store = _pipeline(source, fetch=fetch, retry_max_attempts=2, retry_budget_s=0.1)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 6)
    assert _dead_letters(pipeline) == []
    assert len(store.saved) == 6


def test_a_dead_letter_too_large_for_the_broker_goes_without_its_value_once():
    bad = [
        Record(TP0.topic, 0, i, None, value, 0)
        for i, value in enumerate([b"{oops", b"{" + b"x" * 5000, b"not json"])
    ]
    source = FakeSource({TP0: bad})
    pipeline, _ = _pipeline(source)
    object.__setattr__(pipeline.parts, "producer", FakeProducer(max_value=1000))
    pipeline._dlq._producer = pipeline.parts.producer
    _run_until(pipeline, lambda: source.last_commit(TP0) == 3)
    sent = pipeline.parts.producer.sent
    assert len(sent) == 3  # each once: the acknowledged ones were not sent again
    dropped = [r for r in sent if r.value is None]
    assert len(dropped) == 1
    assert "5001 bytes" in dict(dropped[0].headers)["tagfleet-value-dropped"].decode()


def test_a_revoked_grant_costs_a_few_dead_letters_then_waits_for_the_fix():
    """Access denied on every object (a revoked s3:GetObject) is a configuration fault after
    SYSTEMIC_REFUSALS in a row: the rest wait, retried, instead of dead-lettering the topic."""
    from consumers.stages.prepare import SYSTEMIC_REFUSALS

    fixed_at = time.monotonic() + 2.0

    def fetch(request: Any, _reserve: Any) -> bytes:
        if time.monotonic() < fixed_at:
            raise PermanentError(Reason.ACCESS_DENIED, "AccessDenied")
        return b"x"

    source = FakeSource({TP0: _records(TP0, 40)})
    pipeline, store = _pipeline(source, fetch=fetch, retry_max_attempts=2, retry_budget_s=0.1)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 40, timeout_s=40)
    dead = _dead_letters(pipeline)
    assert len(dead) == SYSTEMIC_REFUSALS - 1
    assert len(store.saved) == 40 - len(dead)


def test_a_removal_is_applied_only_once_its_object_is_gone():
    """A forged (or stale) ObjectRemoved for an object that is still there wipes nothing."""
    still_there = {("bkt", "alive.png")}
    records = [
        _notification(TP0, 0, ["alive.png"]),
        _notification(TP0, 1, ["gone.png"]),
    ]
    records = [
        r._replace(value=r.value.replace(b"ObjectCreated:Put", b"ObjectRemoved:Delete"))
        for r in records
    ]
    source = FakeSource({TP0: records})
    pipeline, store = _pipeline(
        source, object_readable=lambda bucket, key: (bucket, key) in still_there
    )
    _run_until(pipeline, lambda: source.last_commit(TP0) == 2)
    assert store.removed == ["s3://bkt/gone.png"]
    ignored = pipeline.metrics.registry.get_sample_value(
        "tagfleet_events_total", {"outcome": "removal_ignored"}
    )
    assert ignored == 1


def test_a_test_event_is_acknowledged_and_counted_not_dead_lettered():
    test_event = Record(
        TP0.topic, 0, 0, None, b'{"Event": "s3:TestEvent", "Bucket": "Test-Bucket"}', 0
    )
    source = FakeSource({TP0: [test_event, *_records(TP0, 3)[1:]]})
    pipeline, store = _pipeline(source)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 3)
    assert _dead_letters(pipeline) == []
    counted = pipeline.metrics.registry.get_sample_value(
        "tagfleet_ignored_records_total", {"kind": "TestEvent"}
    )
    assert counted == 1 and len(store.saved) == 2


def test_a_key_not_found_by_its_first_reading_is_fetched_by_the_other():
    """AWS-form ``a+b.png`` reads first as ``a b.png``; the object is really ``a+b.png`` (a
    server that sends raw keys without the gateway's marks): found on the second reading,
    stored under the object's real name, counted; the next event of the same key follows."""

    def fetch(request: Any, _reserve: Any) -> bytes:
        if request.key == "a b.png":
            raise PermanentError(Reason.OBJECT_NOT_FOUND, "NoSuchKey")
        return b"x"

    records = [_notification(TP0, 0, ["a+b.png"]), _notification(TP0, 1, ["a+b.png"])]
    source = FakeSource({TP0: records})
    pipeline, store = _pipeline(source, fetch=fetch)
    _run_until(pipeline, lambda: source.last_commit(TP0) == 2)
    assert store.saved == ["s3://bkt/a+b.png", "s3://bkt/a+b.png"]
    assert _dead_letters(pipeline) == []
    second = pipeline.metrics.registry.get_sample_value(
        "tagfleet_key_readings_total", {"reading": "alternative"}
    )
    assert second == 2


def test_a_removal_removes_only_the_readings_whose_object_is_gone():
    """A removal of AWS-form ``a+b.png``: the object ``a b.png`` (first reading) is still
    there, ``a+b.png`` is gone: only the asset of ``a+b.png`` loses its tags."""
    still_there = {("bkt", "a b.png")}
    record = _notification(TP0, 0, ["a+b.png"])
    record = record._replace(
        value=record.value.replace(b"ObjectCreated:Put", b"ObjectRemoved:Delete")
    )
    source = FakeSource({TP0: [record]})
    pipeline, store = _pipeline(
        source, object_readable=lambda bucket, key: (bucket, key) in still_there
    )
    _run_until(pipeline, lambda: source.last_commit(TP0) == 1)
    assert store.removed == ["s3://bkt/a+b.png"]


# -- priority lanes (consumers.lanes applied by the loop) ----------------------------------
TPB = TopicPartition("assets.backfill", 0)  # Settings(topic="assets"): the backfill lane


def _lane_records(tp: TopicPartition, prefix: str, n: int) -> list[Record]:
    return [
        Record(
            tp.topic,
            tp.partition,
            i,
            None,
            json.dumps(
                {"asset_id": f"s3://bkt/{prefix}-{i}", "uri": f"s3://bkt/{prefix}-{i}"}
            ).encode(),
            0,
        )
        for i in range(n)
    ]


def test_an_upload_is_served_before_a_full_backfill_lane_drains():
    source = FakeSource({TPB: _lane_records(TPB, "b", 300), TP0: []})

    def upload_arrives() -> None:
        source.pending[TP0] = _lane_records(TP0, "upload", 1)
        source.ends[TP0] = 1

    source.in_poll = [lambda: None] * 10 + [upload_arrives]
    pipeline, store = _pipeline(source, backfill_max_in_flight=8)
    _run_until(pipeline, lambda: len(store.saved) == 301 and source.last_commit(TPB) == 300)
    served_at = store.saved.index("s3://bkt/upload-0")
    assert served_at < 100, served_at  # ahead of most of the backfill lane
    assert len(set(store.saved)) == 301  # nothing lost or doubled by the handed-back records
    assert source.last_commit(TP0) == 1
    assert source.rewound > 0  # backfill records past the lane's allowance were handed back


@pytest.mark.parametrize(("share", "least"), [(0.25, 40), (0.0, 0)])
def test_the_minimum_share_keeps_backfill_moving_under_a_steady_upload_stream(
    share: float, least: int
):
    """One upload arrives at every poll, every 5 ms (uploads busy all along: the quiet period
    is 500 ms): backfill still gets its
    share of what is taken; without a share it waits for the uploads to end."""
    uploads = _lane_records(TP0, "u", 300)
    source = FakeSource({TP0: [], TPB: _lane_records(TPB, "b", 300)})

    def one_upload(record: Record) -> Callable[[], None]:
        def arrive() -> None:
            time.sleep(0.005)  # a stream, not a flood: the stages keep up with it
            source.pending[TP0].append(record)
            source.ends[TP0] = record.offset + 1

        return arrive

    source.in_poll = [one_upload(r) for r in uploads]
    pipeline, store = _pipeline(source, backfill_max_in_flight=8, backfill_min_share=share)
    _run_until(pipeline, lambda: len(store.saved) == 600 and source.last_commit(TPB) == 300)
    last_upload = max(i for i, a in enumerate(store.saved) if "/u-" in a)
    backfill_before = sum("/b-" in a for a in store.saved[:last_upload])
    if least:
        assert backfill_before >= least, backfill_before  # progressed while uploads were busy
    else:
        assert backfill_before <= 8, backfill_before  # what was taken before the first upload
    assert source.last_commit(TP0) == 300
