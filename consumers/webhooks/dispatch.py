"""``tagfleet webhook serve``: result events POSTed to every registered endpoint.

Each endpoint has a thread and a Kafka consumer group of its own (``<group>-<endpoint id>``)
on the result topic, so one slow or hanging endpoint lags only its own group: it delays no
other endpoint and nothing of the service, which does not know webhooks exist. A record is
POSTed (``timeout_s`` per attempt) until the endpoint answers 2xx, retried on anything else
with exponential backoff and full jitter until ``budget_s`` has passed since the first
attempt; then it goes to the webhook dead-letter topic with the endpoint's id and the last
error in its headers (``tagfleet webhook redrive`` sends them again). The offset is
committed after each record is delivered or dead-lettered: at least once per endpoint.
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
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

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


def deliver(endpoint: Endpoint, body: bytes, policy: Delivery, stop: threading.Event) -> str | None:
    """POST until delivered (None) or the budget is spent (the last error)."""
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
    ) -> None:
        super().__init__(name=f"webhook-{endpoint.id}", daemon=True)
        self.endpoint, self.policy, self.stop = endpoint, policy, stop
        self.dlq_topic, self.producer = dlq_topic, producer
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
        error = deliver(self.endpoint, record.value, self.policy, self.stop)
        if error is None or self.stop.is_set():
            if error is not None:  # stopping mid-retry: leave it uncommitted
                raise _Stopping
            return
        log.error("webhook dead-lettered", extra={"endpoint": self.endpoint.id, "error": error})
        headers = [(ENDPOINT_HEADER, self.endpoint.id.encode()), (ERROR_HEADER, error.encode())]
        self.producer.send(self.dlq_topic, key=record.key, value=record.value, headers=headers)
        self.producer.flush(30)


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
) -> None:
    """Run every endpoint's worker until ``stop`` is set."""
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
        )
        for e in endpoints
    ]
    for w in workers:
        w.start()
    log.info("webhooks serving", extra={"endpoints": [e.id for e in endpoints]})
    stop.wait()
    for w in workers:
        w.join(policy.timeout_s + 10)
    producer.close(10)


def redrive(
    endpoint: Endpoint,
    *,
    kafka: dict[str, Any],
    dlq_topic: str,
    policy: Delivery,
    post_once: Callable[[Endpoint, bytes, float], str | None] = post,
) -> tuple[int, int]:
    """POST every dead letter of ``endpoint`` once more: (delivered, failed)."""
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **kafka)
    parts = [TopicPartition(dlq_topic, p) for p in consumer.partitions_for_topic(dlq_topic) or []]
    delivered = failed = 0
    if parts:
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    headers = dict(record.headers or [])
                    if headers.get(ENDPOINT_HEADER, b"").decode() != endpoint.id:
                        continue
                    if post_once(endpoint, record.value, policy.timeout_s) is None:
                        delivered += 1
                    else:
                        failed += 1
    consumer.close(autocommit=False)
    return delivered, failed
