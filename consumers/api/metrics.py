"""The API's own Prometheus metrics (docs/architecture.md, "Metrics"), in its own registry."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

# Pre-registered, so every series exists (at 0) before the first request.
ROUTES = ("/v1/assets/{asset_id:path}", "/v1/search", "/v1/review")


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tagfleet_api_requests_total",
            "API requests answered, by route and status class",
            ["route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "tagfleet_api_request_seconds",
            "API request latency by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        for route in ROUTES:
            self.seconds.labels(route)
            for status in ("2xx", "4xx", "5xx"):
                self.requests.labels(route, status)

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        self.requests.labels(route, f"{status // 100}xx").inc()
        self.seconds.labels(route).observe(time.perf_counter() - started)
