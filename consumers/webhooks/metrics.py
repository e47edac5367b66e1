"""The Prometheus metrics of ``tagfleet webhook serve`` (docs/architecture.md, "Metrics"), in
a registry of its own, served on ``--metrics-port``.

Every series of every registered endpoint exists (at 0) from the start, so a dashboard
panel and an alert see an endpoint before its first delivery. ``tagfleet_webhook_lag`` is
measured apart from the deliveries (:class:`LagProbe`, its own Kafka clients): an endpoint
that hangs shows its lag growing while its worker waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "dead_lettered")


class WebhookMetrics:
    """Per endpoint (its id): outcomes, retries, delivery time, lag."""

    def __init__(self, registry: CollectorRegistry, endpoints: Sequence[str]) -> None:
        self.deliveries = Counter(
            "tagfleet_webhook_deliveries_total",
            "Result events handed to an endpoint: delivered (2xx) or dead-lettered",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "tagfleet_webhook_retries_total",
            "POSTs that failed (not 2xx, timeout, refused) and were tried again",
            ["endpoint"],
            registry=registry,
        )
        self.seconds = Histogram(
            "tagfleet_webhook_delivery_seconds",
            "From the first POST of an event to its 2xx, retries included",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.lag = Gauge(
            "tagfleet_webhook_lag",
            "Result events not yet delivered or dead-lettered for the endpoint (end offsets"
            " of the result topic minus its group's commits)",
            ["endpoint"],
            registry=registry,
        )
        for endpoint in endpoints:
            self.retries.labels(endpoint)
            self.seconds.labels(endpoint)
            self.lag.labels(endpoint)
            for outcome in OUTCOMES:
                self.deliveries.labels(endpoint, outcome)


class LagProbe(threading.Thread):
    """Every ``every_s``: each endpoint group's lag on ``topic`` (a partition its group has not
    committed on counts from the partition's beginning, where the worker starts)."""

    def __init__(
        self,
        metrics: WebhookMetrics,
        groups: dict[str, str],
        *,
        kafka: dict[str, Any],
        topic: str,
        stop: threading.Event,
        every_s: float = 5.0,
    ) -> None:
        super().__init__(name="webhook-lag", daemon=True)
        self.metrics, self.groups, self.kafka, self.topic = metrics, groups, kafka, topic
        self.stop, self.every_s = stop, every_s

    def run(self) -> None:
        admin: KafkaAdminClient | None = None
        consumer: KafkaConsumer | None = None
        try:
            while True:
                try:  # clients made here too: a broker down at the start is tried again
                    if admin is None:
                        admin = KafkaAdminClient(**self.kafka)
                    if consumer is None:
                        consumer = KafkaConsumer(
                            **self.kafka, group_id=None, enable_auto_commit=False
                        )
                    self.measure(admin, consumer)
                except KafkaError as exc:  # the next round tries again
                    log.warning("webhook lag not measured", extra={"error": str(exc)})
                if self.stop.wait(self.every_s):
                    return
        finally:
            if consumer is not None:
                consumer.close()
            if admin is not None:
                admin.close()

    def measure(self, admin: KafkaAdminClient, consumer: KafkaConsumer) -> None:
        partitions = consumer.partitions_for_topic(self.topic) or set()
        parts = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not parts:
            return
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        for endpoint, group in self.groups.items():
            committed = admin.list_group_offsets({group: parts}).get(group, {})
            lag = 0
            for tp in parts:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                lag += max(0, ends[tp] - done)
            self.metrics.lag.labels(endpoint).set(lag)
