"""Issue 13 item 3 on the real stack: a partition that no poll returns raises the stall metric
and fails ``/healthz``, and so does a batch hung in the model, each within its configured
limit. The faults are injected by failpoints (``consumers/failpoints.py``): ``kafka_fetch``
withholds one partition's records from every poll, as kafka-python did when it stopped
fetching a partition; ``predict=sleep`` hangs one inference batch."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    native_event,
    upload_images,
    wait_until,
)
from kafka import KafkaProducer

pytestmark = pytest.mark.integration


def _produce_to_partitions(bootstrap: str, topic: str, bucket: str, keys: list[str]) -> None:
    """One event per key, round robin over the topic's 4 partitions."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i, key in enumerate(keys):
        k, v = native_event(bucket, key)
        producer.send(topic, key=k, value=v, partition=i % 4)
    producer.flush(30)
    producer.close()


def _metric(consumer: ConsumerProcess, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = consumer.get("/metrics")
    if status != 200:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _health(consumer: ConsumerProcess) -> tuple[int, dict[str, Any]]:
    status, body = consumer.get("/healthz")
    return status, (json.loads(body)["checks"] if body.startswith("{") else {})


def _start(stack: dict[str, str], tmp_path: Path, failpoints: str, **flags: Any) -> ConsumerProcess:
    return ConsumerProcess(
        tmp_path / "consumer.log",
        {**env_for(stack), "TAGFLEET_FAILPOINTS": failpoints},
        metrics_port=free_port(),
        **flags,
    )


def test_a_partition_no_poll_returns_is_stalled_and_fails_liveness_within_its_limit(
    stack, kafka_bootstrap, new_topic, new_bucket, s3, sqlite_url, fleet_path, tmp_path
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 40)
    topic = new_topic(partitions=4)
    _produce_to_partitions(kafka_bootstrap, topic, bucket, keys)  # 10 per partition
    stall_s, liveness_s = 3.0, 12.0
    consumer = _start(
        stack,
        tmp_path,
        f"kafka_fetch=raise~{topic}/2",  # partition 2 is never returned by a poll
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic="",
        dlq_topic=f"{topic}.dlq",
        store=sqlite_url,
        fleet=fleet_path,
        partition_stall_s=stall_s,
        liveness_stall_s=liveness_s,
        rejoin_stuck_s=600,  # no new consumer: the failpoint would withhold it there too
    )
    try:
        wait_until(lambda: consumer.get("/readyz")[0] == 200, 180, what="joined and ready")
        joined = time.monotonic()
        # the three other partitions are stored; partition 2 keeps its lag of 10
        wait_until(
            lambda: _metric(consumer, "tagfleet_events_total", outcome="stored") == 30,
            240,
            what="30 stored",
        )
        wait_until(
            lambda: _metric(consumer, "tagfleet_stalled_partitions") == 1,
            60,
            0.2,
            what="the stall metric",
        )
        stalled_after = time.monotonic() - joined
        status, checks = wait_until(
            lambda: (h := _health(consumer))[1].get("not_stalled_fetching") is False and h,
            liveness_s + 60,
            0.2,
            what="/healthz failing on the stall",
        )
        failed_after = time.monotonic() - joined
        assert status == 503, checks
        assert checks["consume_loop"] and checks["not_fatal"], checks  # the loop still turns
        assert _metric(consumer, "tagfleet_consumer_lag", topic=topic, partition="2") == 10
        for other in ("0", "1", "3"):
            assert _metric(consumer, "tagfleet_consumer_lag", topic=topic, partition=other) == 0
        assert _metric(consumer, "tagfleet_paused_partitions") == 0  # stalled, not paused
        # a generous bound for a loaded machine: the limit, plus the 2 s checks, plus slack
        assert failed_after < liveness_s + 45, (stalled_after, failed_after)
        assert stalled_after < failed_after, (stalled_after, failed_after)
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    assert '"point": "kafka_fetch"' in consumer.logs()


def test_a_batch_hung_in_the_model_fails_liveness_within_its_limit(
    stack, kafka_bootstrap, new_topic, new_bucket, s3, sqlite_url, fleet_path, tmp_path
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 8)
    topic = new_topic(partitions=4)
    _produce_to_partitions(kafka_bootstrap, topic, bucket, keys)
    limit_s = 10.0  # room for the first /healthz 200 on a loaded machine
    consumer = _start(
        stack,
        tmp_path,
        "predict=sleep:600x1",  # the first batch never ends
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic="",
        dlq_topic=f"{topic}.dlq",
        store=sqlite_url,
        fleet=fleet_path,
        max_inference_s=limit_s,
    )
    try:
        wait_until(
            lambda: '"point": "predict"' in consumer.logs(), 180, 0.2, what="the batch hanging"
        )
        hung = time.monotonic()
        assert _health(consumer)[0] == 200  # within its limit, a long batch is fine
        status, checks = wait_until(
            lambda: (h := _health(consumer))[0] == 503 and h, limit_s + 60, 0.2, what="/healthz"
        )
        failed_after = time.monotonic() - hung
        assert checks["inference_not_hung"] is False, checks
        assert checks["consume_loop"], checks  # the loop itself still turns
        assert (_metric(consumer, "tagfleet_inference_batch_seconds") or 0) >= limit_s
        assert failed_after < limit_s + 45, failed_after
    finally:
        consumer.kill()  # the batch sleeps for 10 minutes: SIGTERM would wait out the drain
