"""The health server: endpoints, and no way for slow or half-open connections to starve the
probes (issue 11: 300 half-sent requests held 300 threads)."""

from __future__ import annotations

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
