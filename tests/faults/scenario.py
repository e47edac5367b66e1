"""One fault scenario's world: topics, a bucket of images, a PostgreSQL store, a ledger and the
consumer processes it starts (each with its own JSON log)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    group_lag,
    image_bytes,
    native_event,
    s3_notification,
    wait_until,
)
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
        self.bucket, self.tmp, self.s3 = bucket, tmp_path, s3
        self.new_topic, self.fleet_path = new_topic, fleet_path
        self.topic = new_topic(partitions=partitions)
        self.topics = [self.topic]  # the lanes the group consumes: upload, then backfill
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
            # each scenario's own embedding store (the ledger checks it after keep_embeddings())
            embeddings=tmp_path / "embeddings",
        )
        self.kafka_client = kafka_client
        self.embeddings: Path | None = None
        # Content-hash dedup off: the events cycle through OBJECTS images, so with it on all
        # but the first few are reused, never reach the model, and the faults at ``predict``
        # and ``after_infer`` (the kills of scenario 1, SLOW's pace) would not land where the
        # scenarios put them.
        self.env = {"TAGFLEET_REUSE_RESULTS": "false"}
        self.logs: list[Path] = []
        self.consumers: list[ConsumerProcess] = []

    def label(self, name: str) -> str:
        """A scenario's name in the figures, with its client when it is not the default."""
        return name if self.kafka_client == "kafka-python" else f"{name} ({self.kafka_client})"

    # -- options (call before producing and starting consumers) -----------------------------
    def use_backfill_lane(self, backfill_share: float, partitions: int = 2) -> str:
        """A backfill lane (docs/events.md, 'Priority lanes'): the consumers subscribe to it too
        and :meth:`produce` sends ``backfill_share`` of the events there; the ledger's checks
        and the group's lag cover both lanes."""
        backfill = self.new_topic(partitions=partitions, prefix="bf")
        self.topics.append(backfill)
        self.flags["backfill_topic"] = backfill
        self.ledger.backfill(backfill, backfill_share)
        return backfill

    def keep_embeddings(self) -> Path:
        """Check the embeddings the consumers write to this scenario's own folder at the end
        (:meth:`ledger.Ledger.embedding_faults`)."""
        self.embeddings = Path(self.flags["embeddings"])
        return self.embeddings

    def produce(self, count: int, prefix: str = "a") -> int:
        return self.ledger.produce(
            self.ledger.native_events(self.bucket, self.objects, count, prefix)
        )

    def produce_removable(self, count: int) -> list[str]:
        """``count`` uploads of objects of their own (asset id = URI, on their lane) that
        :meth:`remove` deletes later; returns their asset ids."""
        keys = [f"gone/{i}.png" for i in range(count)]
        for i, key in enumerate(keys):
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=image_bytes(OBJECTS + i))
        events = [native_event(self.bucket, key) for key in keys]
        self.ledger.produce((k.decode(), v) for k, v in events)
        return [k.decode() for k, _ in events]

    def remove(self, asset_ids: list[str]) -> None:
        """Delete the objects of ``asset_ids`` (from :meth:`produce_removable`) and publish
        their ``ObjectRemoved`` notifications on the upload lane, after their creates."""
        prefix = f"s3://{self.bucket}/"
        keys = [a.removeprefix(prefix) for a in asset_ids]
        for key in keys:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        events = [s3_notification(self.bucket, k, "ObjectRemoved:Delete") for k in keys]
        self.ledger.produce_removals((k.decode(), v) for k, v in events)

    def start(self, failpoints: str = "", env: dict[str, str] | None = None, **flags: Any):
        """A consumer process (metrics on a free port) with ``failpoints`` set, if any."""
        log = self.tmp / f"consumer-{len(self.logs)}.log"
        self.logs.append(log)
        failpoint_env = {"TAGFLEET_FAILPOINTS": failpoints} if failpoints else {}
        extra_env = {**self.env, **(env or {}), **failpoint_env}
        merged = {**self.flags, "metrics_port": free_port(), **flags}
        consumer = ConsumerProcess(log, {**env_for(self.stack), **extra_env}, **merged)
        self.consumers.append(consumer)
        return consumer

    def lag(self) -> int | None:
        """The group's lag over every lane (None: unknown, or a lane with no commits yet)."""
        try:
            lags = [group_lag(self.admin, self.kafka, self.group, t) for t in self.topics]
        except Exception:  # noqa: BLE001 - broker restarting: unknown, not zero
            return None
        return None if None in lags else sum(lag for lag in lags if lag is not None)

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

    def backbones(self) -> list[str]:
        """The backbone keys of the scenario's fleet (each stored asset has one embedding by
        each)."""
        from models import load_fleet

        return sorted(load_fleet(self.fleet_path, device="cpu").backbones)

    def stop_all(self) -> None:
        for consumer in self.consumers:
            if consumer.alive():
                consumer.kill()

    def tail(self) -> str:
        return "\n".join(f"--- {c.log_path.name}\n{c.logs()[-2500:]}" for c in self.consumers[-3:])
