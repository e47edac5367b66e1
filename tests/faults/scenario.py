"""One fault scenario's world: topics, a bucket of images, a PostgreSQL store, a ledger and the
consumer processes it starts (each with its own JSON log)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import ConsumerProcess, env_for, free_port, group_lag, image_bytes, wait_until
from ledger import Ledger

OBJECTS = 48  # distinct images; events get unique asset ids over this pool
# The service's Kafka clients (kafka_client): the scenarios that involve the group (1, 2, 3, 6,
# 9) run on each (docs/reliability.md, "Two clients").
CLIENTS = ["kafka-python", "confluent"]


class Scenario:
    def __init__(
        self,
        stack: dict[str, str],
        kafka_bootstrap: str,
        kafka_admin: Any,
        new_topic: Any,
        bucket: str,
        s3: Any,
        store_url: str,
        fleet_path: Path,
        tmp_path: Path,
        partitions: int = 4,
        kafka_client: str = "kafka-python",
    ) -> None:
        self.stack, self.kafka, self.admin = stack, kafka_bootstrap, kafka_admin
        self.bucket, self.tmp = bucket, tmp_path
        self.topic = new_topic(partitions=partitions)
        self.results, self.dlq = new_topic(partitions=2), new_topic(partitions=1)
        self.group = f"g-{self.topic}"
        self.objects = [f"img/{i}.png" for i in range(OBJECTS)]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: s3.put_object(
                        Bucket=bucket, Key=self.objects[i], Body=image_bytes(i)
                    ),
                    range(OBJECTS),
                )
            )
        self.ledger = Ledger(kafka_bootstrap, self.topic, self.results, self.dlq, store_url)
        self.flags: dict[str, Any] = dict(
            bootstrap_servers=kafka_bootstrap,
            topic=self.topic,
            group_id=self.group,
            results_topic=self.results,
            dlq_topic=self.dlq,
            store=store_url,
            fleet=fleet_path,
            batch_size=16,
            commit_interval_ms=200,
            # the ledger gives each event its own asset id over a shared pool of objects
            asset_id_binding="any",
            kafka_client=kafka_client,
        )
        self.kafka_client = kafka_client
        self.logs: list[Path] = []
        self.consumers: list[ConsumerProcess] = []

    def label(self, name: str) -> str:
        """A scenario's name in the figures, with its client when it is not the default."""
        return name if self.kafka_client == "kafka-python" else f"{name} ({self.kafka_client})"

    def produce(self, count: int, prefix: str = "a") -> int:
        return self.ledger.produce(
            self.ledger.native_events(self.bucket, self.objects, count, prefix)
        )

    def start(self, failpoints: str = "", env: dict[str, str] | None = None, **flags: Any):
        """A consumer process (metrics on a free port) with ``failpoints`` set, if any."""
        log = self.tmp / f"consumer-{len(self.logs)}.log"
        self.logs.append(log)
        extra_env = {**(env or {}), **({"TAGFLEET_FAILPOINTS": failpoints} if failpoints else {})}
        merged = {**self.flags, "metrics_port": free_port(), **flags}
        consumer = ConsumerProcess(log, {**env_for(self.stack), **extra_env}, **merged)
        self.consumers.append(consumer)
        return consumer

    def lag(self) -> int | None:
        try:
            return group_lag(self.admin, self.kafka, self.group, self.topic)
        except Exception:  # noqa: BLE001 - broker restarting: unknown, not zero
            return None

    def wait_lag_zero(self, timeout_s: float) -> None:
        try:
            wait_until(lambda: self.lag() == 0, timeout_s, what=f"group {self.group} lag 0")
        except AssertionError as exc:
            dumps = "\n".join(
                f"--- {c.log_path.name}\n{c.thread_dump()}" for c in self.consumers if c.alive()
            )
            raise AssertionError(f"{exc}\n{dumps}\n{self.tail()}") from None

    def wait_stored(self, count: int, timeout_s: float, interval_s: float = 0.1) -> None:
        wait_until(
            lambda: self.ledger.stored_count() >= count,
            timeout_s,
            interval_s,
            what=f"{count} assets stored",
        )

    def time_to_progress(self, timeout_s: float = 180, before: int | None = None) -> float:
        """Seconds until the store holds more than ``before`` results (default: now)."""
        started = time.monotonic()
        before = self.ledger.stored_count() if before is None else before
        wait_until(lambda: self.ledger.stored_count() > before, timeout_s, 0.2, what="progress")
        return time.monotonic() - started

    def time_to_progress_by_lag(self, lag: int, timeout_s: float = 180) -> float:
        """Seconds until the group's lag drops below ``lag`` (progress that stores nothing new)."""
        started = time.monotonic()
        wait_until(lambda: (x := self.lag()) is not None and x < lag, timeout_s, 0.2, what="lag")
        return time.monotonic() - started

    def stop_all(self) -> None:
        for consumer in self.consumers:
            if consumer.alive():
                consumer.kill()

    def tail(self) -> str:
        return "\n".join(f"--- {c.log_path.name}\n{c.logs()[-2500:]}" for c in self.consumers[-3:])
