"""The HTTP endpoints operators probe: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (ready).

One asyncio event loop on a daemon thread reads requests; a connection waiting for its request
costs a socket and a small buffer, not a thread. Each connection has ``timeout_s`` to send its
request head and take the answer, and at most ``max_connections`` are open: past that, the
oldest one still sending its request is closed to make room, so a pile of half-open
connections (opened, request never finished) cannot starve the kubelet's probes or
Prometheus' scrape. Answers (the checks, the exposition) are computed on a small thread pool
so that a slow check never stalls the loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], dict[str, bool]]

_MAX_HEAD_BYTES = 8192
_ANSWER_THREADS = 4


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
    ) -> None:
        self._routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/metrics": lambda: (200, generate_latest(registry), CONTENT_TYPE_LATEST),
            "/healthz": lambda: _checks(liveness()),
            "/readyz": lambda: _checks(readiness()),
        }
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._sock = socket.create_server((host, port), backlog=128)
        self._sock.setblocking(False)
        self._pending: dict[asyncio.Task[None], bool] = {}  # task -> still reading its request
        self._pool = ThreadPoolExecutor(_ANSWER_THREADS, thread_name_prefix="health-answer")
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
        self._make_room()
        self._pending[task] = True
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout_s)
            self._pending[task] = False
            status, body, content_type = await self._answer(head)
            writer.write(_response(status, body, content_type))
            await asyncio.wait_for(writer.drain(), self._timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, broken or oversized request: the connection is closed below
        finally:
            self._pending.pop(task, None)
            writer.close()

    def _make_room(self) -> None:
        """At the cap, close the oldest connections still sending their request."""
        excess = len(self._pending) + 1 - self._max_connections
        for task, reading in list(self._pending.items()):
            if excess <= 0:
                break
            if reading:
                task.cancel()
                self._pending.pop(task)
                excess -= 1

    async def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        route = self._routes.get(target)
        if route is None:
            return 404, b"not found\n", "text/plain"
        if method != b"GET":
            return 405, b"method not allowed\n", "text/plain"
        return await asyncio.get_running_loop().run_in_executor(self._pool, route)


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
