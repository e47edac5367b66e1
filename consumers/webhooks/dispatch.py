"""``tagfleet webhook serve``: result events POSTed to every registered endpoint.

Each endpoint has a thread and a Kafka consumer group of its own (``<group>-<endpoint id>``)
on the result topic, so one slow or hanging endpoint lags only its own group: it delays no
other endpoint and nothing of the service, which does not know webhooks exist. A record is
POSTed (``timeout_s`` per attempt) until the endpoint answers 2xx, retried on anything else
with exponential backoff and full jitter until ``budget_s`` has passed since the first
attempt; then it goes to the webhook dead-letter topic with the endpoint's id and the last
error in its headers (``tagfleet webhook redrive`` sends them again, each once: its ledger,
:mod:`consumers.webhooks.ledger`). The offset is committed after each record is delivered or
dead-lettered: at least once per endpoint. Deliveries, retries, dead letters, delivery time
and each endpoint's lag are Prometheus metrics (:mod:`consumers.webhooks.metrics`) on
``metrics_port``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from consumers.dlq import TopicMissing, read_all
from consumers.health import HealthServer
from consumers.webhooks import ledger
from consumers.webhooks.metrics import LagProbe, WebhookMetrics
from consumers.webhooks.registry import Endpoint
from consumers.webhooks.signing import HEADER, sign

log = logging.getLogger(__name__)
ENDPOINT_HEADER = "tagfleet-webhook-endpoint"
ERROR_HEADER = "tagfleet-webhook-error"


@dataclass(frozen=True)
class Delivery:
    timeout_s: float = 5.0
    budget_s: float = 300.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0


def post(endpoint: Endpoint, body: bytes, timeout_s: float) -> str | None:
    """POST once; None on 2xx, else why not."""
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked at registration
        endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            HEADER: sign(body, endpoint.secrets, int(time.time())),
            "User-Agent": "tagfleet-webhook/1",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


def deliver(
    endpoint: Endpoint,
    body: bytes,
    policy: Delivery,
    stop: threading.Event,
    retried: Callable[[], None] = lambda: None,
) -> str | None:
    """POST until delivered (None) or the budget is spent (the last error); ``retried`` is
    called for each failed POST that is tried again."""
    started = time.monotonic()
    attempt = 0
    while True:
        error = post(endpoint, body, policy.timeout_s)
        if error is None:
            return None
        attempt += 1
        left = policy.budget_s - (time.monotonic() - started)
        if left <= 0 or stop.is_set():
            return error
        wait = random.uniform(0, min(policy.backoff_max_s, policy.backoff_s * 2**attempt))
        log.warning("webhook delivery failed", extra={"endpoint": endpoint.id, "error": error})
        retried()
        if stop.wait(min(wait, left)):
            return error


def wanted(endpoint: Endpoint, event: dict[str, Any]) -> bool:
    kind = "removed" if event.get("removed") else "tags"
    if kind not in endpoint.events:
        return False
    return endpoint.tenant is None or event.get("tenant") == endpoint.tenant


class EndpointWorker(threading.Thread):
    """One endpoint's consumer, deliveries and dead letters."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        kafka: dict[str, Any],
        topic: str,
        group: str,
        dlq_topic: str,
        policy: Delivery,
        stop: threading.Event,
        producer: KafkaProducer,
        metrics: WebhookMetrics,
    ) -> None:
        super().__init__(name=f"webhook-{endpoint.id}", daemon=True)
        self.endpoint, self.policy, self.stop = endpoint, policy, stop
        self.dlq_topic, self.producer, self.metrics = dlq_topic, producer, metrics
        self.consumer = KafkaConsumer(
            topic,
            group_id=f"{group}-{endpoint.id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **kafka,
        )

    def run(self) -> None:
        try:
            self._loop()
        except _Stopping:
            pass
        finally:
            self.consumer.close(autocommit=False)

    def _loop(self) -> None:
        while not self.stop.is_set():
            for tp, records in self.consumer.poll(timeout_ms=500).items():
                for record in records:
                    if self.stop.is_set():
                        return
                    self._handle(record)
                    self.consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})

    def _handle(self, record: Any) -> None:
        try:
            event = json.loads(record.value)
        except (TypeError, ValueError):
            return
        if not isinstance(event, dict) or not wanted(self.endpoint, event):
            return
        endpoint = self.endpoint.id
        started = time.perf_counter()
        error = deliver(
            self.endpoint,
            record.value,
            self.policy,
            self.stop,
            self.metrics.retries.labels(endpoint).inc,
        )
        if error is None or self.stop.is_set():
            if error is not None:  # stopping mid-retry: leave it uncommitted
                raise _Stopping
            self.metrics.deliveries.labels(endpoint, "delivered").inc()
            self.metrics.seconds.labels(endpoint).observe(time.perf_counter() - started)
            return
        log.error("webhook dead-lettered", extra={"endpoint": endpoint, "error": error})
        headers = [(ENDPOINT_HEADER, endpoint.encode()), (ERROR_HEADER, error.encode())]
        self.producer.send(self.dlq_topic, key=record.key, value=record.value, headers=headers)
        self.producer.flush(30)
        self.metrics.deliveries.labels(endpoint, "dead_lettered").inc()


class _Stopping(Exception):
    pass


def serve(
    endpoints: list[Endpoint],
    *,
    kafka: dict[str, Any],
    topic: str,
    group: str,
    dlq_topic: str,
    policy: Delivery,
    stop: threading.Event,
    metrics_host: str = "0.0.0.0",  # noqa: S104 - a pod's metrics port, like the consumer's
    metrics_port: int = 0,
) -> None:
    """Run every endpoint's worker until ``stop`` is set; ``/metrics``, ``/healthz`` and
    ``/readyz`` on ``metrics_port`` (0: none)."""
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry, [e.id for e in endpoints])
    producer = KafkaProducer(acks="all", **kafka)
    workers = [
        EndpointWorker(
            e,
            kafka=kafka,
            topic=topic,
            group=group,
            dlq_topic=dlq_topic,
            policy=policy,
            stop=stop,
            producer=producer,
            metrics=metrics,
        )
        for e in endpoints
    ]
    groups = {e.id: f"{group}-{e.id}" for e in endpoints}
    probe = LagProbe(metrics, groups, kafka=kafka, topic=topic, stop=stop)
    server = None
    if metrics_port:

        def running() -> dict[str, bool]:
            return {"endpoints_running": all(w.is_alive() for w in workers)}

        server = HealthServer(metrics_host, metrics_port, registry, running, running)
        server.start()
    for w in workers:
        w.start()
    probe.start()
    log.info("webhooks serving", extra={"endpoints": [e.id for e in endpoints]})
    stop.wait()
    for w in workers:
        w.join(policy.timeout_s + 10)
    probe.join(10)
    if server is not None:
        server.stop()
    producer.close(10)


@dataclass
class Redriven:
    """What one redrive did: ``unrecorded`` are dead letters delivered whose ledger entry
    could not be written (a later redrive would send them again)."""

    delivered: int = 0
    failed: int = 0
    already: int = 0
    unrecorded: list[str] = field(default_factory=list)


def redrive(
    endpoint: Endpoint,
    *,
    kafka: dict[str, Any],
    dlq_topic: str,
    policy: Delivery,
    post_once: Callable[[Endpoint, bytes, float], str | None] = post,
) -> Redriven:
    """POST every dead letter of ``endpoint`` that no earlier redrive delivered, once.

    Reads the dead-letter topic and its ledger (:mod:`consumers.webhooks.ledger`) to their
    ends at the start; each 2xx is recorded in the ledger. ``TimeoutError`` or
    ``KafkaError`` when the cluster stops answering."""
    ledger_name = ledger.ledger_topic(dlq_topic)
    done = ledger.delivered(kafka, ledger_name)
    try:
        letters = read_all(kafka, dlq_topic)
    except TopicMissing:
        letters = []  # nothing was ever dead-lettered
    out = Redriven()
    pending = []
    for record in letters:
        if dict(record.headers or []).get(ENDPOINT_HEADER, b"").decode() != endpoint.id:
            continue
        if ledger.position(record) in done:
            out.already += 1
        else:
            pending.append(record)
    if not pending:
        return out
    # the ledger is reachable and writable before anything is sent
    ledger.ensure(kafka, ledger_name)
    producer = KafkaProducer(**kafka, acks="all", retries=5)
    try:
        for record in pending:
            if post_once(endpoint, record.value, policy.timeout_s) is not None:
                out.failed += 1
                continue
            out.delivered += 1
            where = ledger.position(record)
            key, value = ledger.entry(where, endpoint.id)
            try:
                producer.send(ledger_name, key=key, value=value).get(timeout=30)
            except KafkaError as exc:
                out.unrecorded.append(f"{where} ({exc})")
    finally:
        producer.close(10)
    return out
