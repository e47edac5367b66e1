"""Readiness and liveness from the service's own state (issue 15): the ready gauge needs no
request to /readyz, /healthz waits for the fleet, and a shared dependency's outage after
start-up does not make a pod NotReady."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from prometheus_client import generate_latest

from consumers.domain import TransientError
from consumers.metrics import Metrics
from consumers.readiness import Readiness


class Store:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0

    def ping(self) -> None:
        self.pings += 1
        if not self.up:
            raise TransientError("database down")


def ready_gauge(metrics: Metrics) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("tagfleet_ready "):
            return float(line.split()[1])
    raise AssertionError("no tagfleet_ready sample")


def started(readiness: Readiness, store: Store) -> None:
    readiness.store = store
    readiness.fleet_loaded = True
    readiness.source = SimpleNamespace(joined=True)  # type: ignore[assignment]
    readiness.pipeline = SimpleNamespace(  # type: ignore[assignment]
        stopping=threading.Event(), fatal_reason=None, loop_heartbeat=0.0
    )


def test_the_ready_gauge_follows_the_state_without_any_readyz_request() -> None:
    metrics, readiness, store = Metrics(), Readiness(), Store()
    readiness.export(metrics.ready)
    assert ready_gauge(metrics) == 0.0
    started(readiness, store)
    assert ready_gauge(metrics) == 1.0
    readiness.pipeline.stopping.set()  # type: ignore[union-attr]
    assert ready_gauge(metrics) == 0.0


def test_healthz_is_not_alive_before_the_fleet_is_loaded() -> None:
    readiness = Readiness()
    assert readiness.alive()["fleet_loaded"] is False
    assert not all(readiness.alive().values())
    readiness.fleet_loaded = True
    assert all(readiness.alive().values())


def test_a_store_outage_after_start_up_keeps_the_pod_ready() -> None:
    readiness, store = Readiness(), Store()
    store.up = False
    started(readiness, store)
    assert readiness.ready()["store_reached_once"] is False  # a wrong URL: never ready
    store.up = True
    readiness._store_checked = 0.0  # skip the 5 s between pings
    readiness.ready()  # starts a ping on its own thread
    deadline = time.monotonic() + 5
    while not readiness.is_ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert readiness.is_ready()
    store.up = False
    pings = store.pings
    assert readiness.is_ready()  # every pod would drain at once otherwise
    assert store.pings == pings  # and the store is no longer pinged by the probes


def test_a_store_that_does_not_answer_never_holds_a_probe_or_a_scrape() -> None:
    readiness, store = Readiness(), Store()
    started(readiness, store)
    hang = threading.Event()

    def hanging_ping() -> None:
        hang.wait(30)

    store.ping = hanging_ping  # type: ignore[method-assign]
    readiness._store_checked = 0.0
    begun = time.monotonic()
    assert readiness.ready()["store_reached_once"] is False
    assert readiness.ready()["store_reached_once"] is False
    assert time.monotonic() - begun < 1.0
    hang.set()


def test_a_store_the_service_already_used_counts_as_reached_without_a_ping() -> None:
    readiness, store = Readiness(), Store()
    started(readiness, store)
    store.up = False  # down right after the start-up migrations
    readiness.store_reached()
    assert readiness.is_ready()
    assert store.pings == 0
