"""The HTTP endpoints operators probe: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (ready)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], dict[str, bool]]


class HealthServer:
    """Serves the endpoints from a daemon thread; ``readiness`` names each check and its state.

    ``/readyz`` answers 200 only when every check is true, 503 otherwise, with the checks as
    JSON so an operator sees which one failed. ``liveness`` false (a stuck pipeline) makes
    ``/healthz`` answer 503 so the orchestrator restarts the process.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: ReadinessCheck,
        liveness: ReadinessCheck,
    ) -> None:
        handler = _make_handler(registry, readiness, liveness)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(
    registry: CollectorRegistry, readiness: ReadinessCheck, liveness: ReadinessCheck
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                checks = liveness() if path == "/healthz" else readiness()
                ok = all(checks.values())
                body = json.dumps({"ok": ok, "checks": checks}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    return Handler
