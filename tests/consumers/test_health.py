"""The health server: endpoints, and no way for slow or half-open connections to starve the
probes (issue 11: 300 half-sent requests held 300 threads)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge

from consumers.health import HealthServer


@pytest.fixture
def checks() -> dict[str, dict[str, bool]]:
    return {"ready": {"fleet_loaded": True, "joined_group": False}, "alive": {"loop": True}}


@pytest.fixture
def server(checks: dict[str, dict[str, bool]]) -> Iterator[HealthServer]:
    registry = CollectorRegistry()
    Gauge("tagfleet_ready", "ready", registry=registry).set(1)
    health = HealthServer(
        "127.0.0.1",
        0,
        registry,
        readiness=lambda: checks["ready"],
        liveness=lambda: checks["alive"],
        timeout_s=2.0,
        max_connections=32,
    )
    health.start()
    yield health
    health.stop()


def get(server: HealthServer, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_endpoints_answer_with_their_checks(
    server: HealthServer, checks: dict[str, dict[str, bool]]
) -> None:
    status, body = get(server, "/metrics")
    assert status == 200 and b"tagfleet_ready 1.0" in body
    status, body = get(server, "/readyz?verbose=1")
    assert status == 503
    assert json.loads(body) == {"ok": False, "checks": checks["ready"]}
    assert get(server, "/healthz")[0] == 200
    checks["alive"]["loop"] = False
    assert get(server, "/healthz")[0] == 503
    assert get(server, "/nowhere")[0] == 404


def test_a_malformed_request_gets_400_and_a_post_405(server: HealthServer) -> None:
    cases = ((b"NONSENSE\r\n\r\n", b"400"), (b"POST /healthz HTTP/1.1\r\n\r\n", b"405"))
    for request, status in cases:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(request)
            assert s.recv(1024).split(b" ")[1] == status


def test_a_request_never_finished_is_closed_after_the_timeout(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /heal")
        assert s.recv(1024) == b""  # closed by the server (2 s), not by our own 10 s timeout


def test_300_half_open_connections_do_not_starve_healthz(server: HealthServer) -> None:
    half_open = []
    threads_before = threading.active_count()
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            half_open.append(s)
        # No thread per connection, and past the cap the oldest ones were closed.
        assert threading.active_count() <= threads_before + 4
        started = time.monotonic()
        status, body = get(server, "/healthz", timeout_s=10)
        # Bound generously (a loaded CI machine): without the cap it would wait for the
        # timeouts of hundreds of connections, or for ever without a timeout.
        assert time.monotonic() - started < 3.0
        assert status == 200 and json.loads(body)["ok"] is True
        assert get(server, "/metrics", timeout_s=10)[0] == 200
    finally:
        for s in half_open:
            s.close()


class _SlowCollector:
    """A collector whose render waits for ``release``: a scrape that takes as long as we say."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def collect(self) -> Iterator[object]:
        self.started.release()
        self.release.wait(20)
        return iter(())


@pytest.fixture
def slow() -> Iterator[tuple[HealthServer, _SlowCollector]]:
    registry = CollectorRegistry()
    collector = _SlowCollector()
    registry.register(collector)  # type: ignore[arg-type]
    health = HealthServer(
        "127.0.0.1",
        0,
        registry,
        readiness=lambda: {"ok": True},
        liveness=lambda: {"ok": True},
        timeout_s=2.0,
        max_connections=32,
        max_metrics=3,
    )
    health.start()
    yield health, collector
    collector.release.set()
    health.stop()


def _send(server: HealthServer, request: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(request)
    return s


def test_probes_answer_at_once_while_metrics_renders_are_stuck(
    slow: tuple[HealthServer, _SlowCollector],
) -> None:
    """Scrapes that take long (or many of them) never queue ahead of /healthz and /readyz;
    /metrics requests past the bound are answered 503 at once instead of waiting."""
    server, collector = slow
    scrapes = [_send(server, b"GET /metrics HTTP/1.1\r\n\r\n") for _ in range(3)]
    for _ in range(2):  # both pool threads render; the third scrape waits for one
        assert collector.started.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while server._metrics_busy < 3 and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    assert server._metrics_busy == 3  # noqa: SLF001 - every render slot is taken now
    try:
        for path in ("/healthz", "/readyz", "/healthz?x=1"):
            started = time.monotonic()
            assert get(server, path, timeout_s=5)[0] == 200
            assert time.monotonic() - started < 1.0, f"{path} waited behind /metrics"
        started = time.monotonic()
        status, body = get(server, "/metrics", timeout_s=5)
        assert status == 503 and b"busy" in body
        assert time.monotonic() - started < 1.0
    finally:
        collector.release.set()
    for s in scrapes:  # the renders that held a slot finish normally
        with s:
            assert s.recv(64).startswith(b"HTTP/1.1 200")
    assert get(server, "/metrics")[0] == 200  # slots are given back


def test_complete_requests_do_not_pile_up_without_bound(
    slow: tuple[HealthServer, _SlowCollector],
) -> None:
    """Hundreds of complete /metrics requests while renders are stuck: a bounded number wait
    for a render, the rest are answered (503) or refused, the connections held stay under the
    cap, no thread per request, and the probes still answer."""
    server, collector = slow
    threads_before = threading.active_count()
    sockets = []
    try:
        for _ in range(200):
            # Refused or reset under load is what a bound looks like from outside.
            with contextlib.suppress(OSError):
                sockets.append(_send(server, b"GET /metrics HTTP/1.1\r\n\r\n"))
        time.sleep(0.5)
        assert len(server._pending) <= 32  # noqa: SLF001 - the bound is the point
        assert server._metrics_busy <= 3  # noqa: SLF001
        assert threading.active_count() <= threads_before + 2
        started = time.monotonic()
        assert get(server, "/healthz", timeout_s=5)[0] == 200
        assert time.monotonic() - started < 1.0
    finally:
        collector.release.set()
        for s in sockets:
            s.close()


def test_a_check_that_raises_fails_its_probe_not_the_server(
    server: HealthServer, checks: dict[str, dict[str, bool]]
) -> None:
    checks["alive"] = None  # type: ignore[assignment]  # .values() raises
    assert get(server, "/healthz")[0] == 500
    assert get(server, "/metrics")[0] == 200


class _BrokenCollector:
    def collect(self) -> Iterator[object]:
        raise RuntimeError("a collector bug")


def test_a_metrics_render_that_fails_is_a_500_and_the_probes_still_answer() -> None:
    registry = CollectorRegistry()
    registry.register(_BrokenCollector())  # type: ignore[arg-type]
    health = HealthServer(
        "127.0.0.1", 0, registry, readiness=lambda: {"ok": True}, liveness=lambda: {"ok": True}
    )
    health.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{health.port}/metrics", timeout=5)  # noqa: S310
        assert info.value.code == 500
        with urllib.request.urlopen(f"http://127.0.0.1:{health.port}/healthz", timeout=5) as r:  # noqa: S310
            assert r.status == 200
    finally:
        health.stop()
