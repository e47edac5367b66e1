"""Liveness (``/healthz``) fails for a member stuck in a rebalance or no longer fetching a
backlog, so an orchestrator restarts it (kafka-python 3.x was seen to do both), and failpoint
specs parse. No services needed."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition

from consumers.failpoints import parse
from consumers.metrics import Metrics
from consumers.pipeline import Parts, Pipeline
from consumers.ports import RebalanceEvent
from consumers.service import Readiness
from consumers.settings import Settings

TP = TopicPartition("t", 0)


class _Source:
    def __init__(self) -> None:
        self.events: list[RebalanceEvent] = []

    def take_rebalance_events(self) -> list[RebalanceEvent]:
        events, self.events = self.events, []
        return events

    def assignment(self) -> set[Any]:
        return set()

    def set_paused(self, paused: bool) -> int:
        return 0

    def pause_topics(self, topics: Any) -> int:
        return 0

    def poll(self, timeout_ms: int) -> list[Any]:
        return []

    def end_offsets(self) -> dict[Any, int]:
        return {}

    def committed_offsets(self) -> dict[Any, int]:
        return {}

    def commit(self, offsets: Any) -> bool:
        return True


def _pipeline(source: _Source) -> Pipeline:
    fleet = SimpleNamespace(functions={}, input_size=8)
    parts = Parts(source, fleet, None, None, lambda r, _: b"", lambda b: None)  # type: ignore[arg-type]
    return Pipeline(Settings(decode_workers=1, fetch_workers=1), parts, Metrics())


def test_rebalancing_time_counts_from_join_and_revoke_until_assigned() -> None:
    source = _Source()
    pipeline = _pipeline(source)
    assert pipeline.rebalancing_s() >= 0.0  # joining: not assigned yet
    source.events = [RebalanceEvent("assigned", frozenset({TP}))]
    pipeline._tick(poll_ms=0)
    assert pipeline.rebalancing_s() == 0.0
    source.events = [RebalanceEvent("revoked", frozenset({TP}))]
    pipeline._tick(poll_ms=0)
    first = pipeline.rebalancing_s()
    time.sleep(0.05)
    pipeline._tick(poll_ms=0)
    assert pipeline.rebalancing_s() > first > 0.0
    source.events = [RebalanceEvent("assigned", frozenset())]  # an empty assignment is fine
    pipeline._tick(poll_ms=0)
    assert pipeline.rebalancing_s() == 0.0


@pytest.mark.parametrize(
    "check",
    ["not_stuck_rebalancing", "not_stalled_fetching", "making_progress", "inference_not_hung"],
)
@pytest.mark.parametrize(("stuck_s", "alive"), [(0.0, True), (100.0, True), (400.0, False)])
def test_liveness_fails_after_the_rebalance_timeout(
    check: str, stuck_s: float, alive: bool
) -> None:
    """A member stuck joining, owning a partition it no longer fetches (liveness_stall_s),
    lagging with nothing completed (liveness_stall_s), or with a batch hung in the model
    (max_inference_s); all 300 s here, the rebalance limit 340 s."""
    readiness = Readiness()
    readiness.fleet_loaded = True
    settings = Settings(max_poll_interval_ms=300_000, session_timeout_ms=10_000)
    readiness.pipeline = SimpleNamespace(  # type: ignore[assignment]
        settings=settings,
        loop_heartbeat=time.monotonic(),
        fatal_reason=None,
        rebalancing_s=lambda: stuck_s if check == "not_stuck_rebalancing" else 0.0,
        fetch_stalled_s=lambda: stuck_s if check == "not_stalled_fetching" else 0.0,
        idle_with_lag_s=lambda: stuck_s if check == "making_progress" else 0.0,
        inference_stuck_s=lambda: stuck_s if check == "inference_not_hung" else 0.0,
    )
    checks = readiness.alive()
    assert checks[check] is alive
    assert all(checks.values()) is alive


def test_failpoint_specs() -> None:
    points = parse("after_store=kill:0.3, predict=raise ,fetch=sleep:2.5@3x1,kafka_fetch=raise~t/1")
    assert points["kafka_fetch"].match == "t/1"
    assert (points["after_store"].action, points["after_store"].arg) == ("kill", 0.3)
    assert (points["predict"].action, points["predict"].arg) == ("raise", 1.0)
    fetch = points["fetch"]
    assert (fetch.action, fetch.arg, fetch.start, fetch.times) == ("sleep", 2.5, 3, 1)
    assert [fetch.should_trigger() for _ in range(5)] == [False, False, True, False, False]
    for bad in ("nowhere=kill", "fetch=explode", "fetch=sleep"):
        with pytest.raises(ValueError):
            parse(bad)
