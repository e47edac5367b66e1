"""The HTTP endpoints operators probe: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (ready).

One asyncio event loop on a daemon thread reads requests; a connection waiting for its request
costs a socket and a small buffer, not a thread. Each connection has ``timeout_s`` to send its
request head and take the answer, and at most ``max_connections`` are open: past that, the
oldest one still sending its request is closed to make room (and when every open connection is
already being answered, the new one is closed), so a pile of half-open connections (opened,
request never finished) cannot starve the kubelet's probes or Prometheus' scrape.

The probes are answered on the event loop itself, at once: their checks only read the
service's state (``consumers.readiness``; the store is pinged on its own thread) and must not
block. ``/metrics`` is rendered on a small thread pool, at most ``max_metrics`` renders running
or waiting; more ``/metrics`` requests are answered 503 at once. So no number of scrapes, slow
or many, queues ahead of ``/healthz`` or ``/readyz``, and nothing waits without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], dict[str, bool]]

log = logging.getLogger(__name__)

_MAX_HEAD_BYTES = 8192
_METRICS_THREADS = 2
_MAX_METRICS = 4
_METRICS = object()  # the route that renders on the pool


class HealthServer:
    """Serves the endpoints from a daemon thread; ``readiness`` names each check and its state.

    ``/readyz`` answers 200 only when every check is true, 503 otherwise, with the checks as
    JSON so an operator sees which one failed. ``liveness`` false (a stuck pipeline, or a fleet
    not loaded yet) makes ``/healthz`` answer 503. The socket is bound in the constructor
    (``port`` is known at once); ``start`` and ``stop`` return promptly.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: ReadinessCheck,
        liveness: ReadinessCheck,
        *,
        timeout_s: float = 5.0,
        max_connections: int = 64,
        max_metrics: int = _MAX_METRICS,
    ) -> None:
        self._registry = registry
        self._probes: dict[str, ReadinessCheck] = {"/healthz": liveness, "/readyz": readiness}
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._max_metrics = max_metrics
        self._metrics_busy = 0  # renders running or waiting for a pool thread (loop thread only)
        self._sock = socket.create_server((host, port), backlog=128)
        self._sock.setblocking(False)
        # task -> still reading its request; at most max_connections entries, oldest first.
        self._pending: dict[asyncio.Task[None], bool] = {}
        self._pool = ThreadPoolExecutor(_METRICS_THREADS, thread_name_prefix="health-metrics")
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)
        elif not self._loop.is_closed():  # never started
            self._loop.close()
        self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(
            self._connection, sock=self._sock, limit=_MAX_HEAD_BYTES
        )
        async with server:
            await self._stopped.wait()
            for task in list(self._pending):
                task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self._make_room():
            writer.close()  # every open connection is being answered: refuse this one
            return
        self._pending[task] = True
        holds_slot = False
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout_s)
            self._pending[task] = False
            answer = self._answer(head)
            if answer is _METRICS:
                if self._metrics_busy >= self._max_metrics:
                    answer = (503, b"busy: too many /metrics requests at once\n", "text/plain")
                else:
                    self._metrics_busy += 1
                    holds_slot = True  # until the answer is written: slow readers count too
                    try:
                        body = await asyncio.wait_for(
                            asyncio.get_running_loop().run_in_executor(
                                self._pool, generate_latest, self._registry
                            ),
                            self._timeout_s,
                        )
                        answer = (200, body, CONTENT_TYPE_LATEST)
                    except Exception as exc:  # noqa: BLE001 - a collector that fails or hangs
                        log.warning("metrics render failed", extra={"error": repr(exc)})
                        answer = (500, b"metrics render failed\n", "text/plain")
            assert isinstance(answer, tuple)
            writer.write(_response(*answer))
            await asyncio.wait_for(writer.drain(), self._timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, broken or oversized request: the connection is closed below
        except asyncio.CancelledError:
            # Closed to make room, or the server stops. This task is the connection's own
            # top level: it ends here (Python 3.11's stream callback logs a cancelled one).
            pass
        finally:
            if holds_slot:
                self._metrics_busy -= 1
            self._pending.pop(task, None)
            writer.close()

    def _make_room(self) -> bool:
        """At the cap, close the oldest connections still sending their request; False when
        there is still no room (every open connection is being answered)."""
        excess = len(self._pending) + 1 - self._max_connections
        for task, reading in list(self._pending.items()):
            if excess <= 0:
                break
            if reading:
                task.cancel()
                self._pending.pop(task)
                excess -= 1
        return excess <= 0

    def _answer(self, head: bytes) -> tuple[int, bytes, str] | object:
        """The answer to a request head, computed here on the loop, or ``_METRICS``."""
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        if target != "/metrics" and target not in self._probes:
            return 404, b"not found\n", "text/plain"
        if method != b"GET":
            return 405, b"method not allowed\n", "text/plain"
        if target == "/metrics":
            return _METRICS
        try:
            return _checks(self._probes[target]())
        except Exception:  # noqa: BLE001 - a failing check is a failed probe, not a dead server
            log.exception("health check %s raised", target)
            return 500, b"check raised\n", "text/plain"


def _checks(checks: dict[str, bool]) -> tuple[int, bytes, str]:
    ok = all(checks.values())
    body = json.dumps({"ok": ok, "checks": checks}).encode()
    return (200 if ok else 503), body, "application/json"


def _response(status: int, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
