"""The fault suite's ledger: per unique asset key, what was produced, stored, dead-lettered and
delivered more than once.

Sources, all real: the events this test produced (the ledger produces them, on the upload lane
or, with :meth:`Ledger.backfill`, part of them on the backfill lane), the metadata store
(current results and tags), the embedding store (:meth:`Ledger.embedding_faults`), the result
topic (one record per completed delivery: the consumer
publishes after the store write and before it commits, so a redelivered event shows up twice),
the dead-letter topic (reason per key) and the consumers' JSON logs (failpoints that fired,
rebalances, transient faults, fatal stops).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

FIGURES: list[dict[str, Any]] = []  # every scenario's figures, printed at the end of the run


@dataclass
class Figures:
    scenario: str
    produced: int
    stored: int
    dead_lettered: int
    lost: int
    duplicates: int
    redeliveries: int
    max_attempts: int
    recover_s: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}s"
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"[{self.scenario}] produced={self.produced} stored={self.stored}"
            f" dead_lettered={self.dead_lettered} lost={self.lost}"
            f" duplicates={self.duplicates} redeliveries={self.redeliveries}"
            f" max_attempts={self.max_attempts} time_to_recover={recover} {extra}".rstrip()
        )


def read_all(bootstrap: str, topic: str, timeout_s: float = 60) -> list[Any]:
    """Every record of ``topic``, from the beginning up to its end offsets at call time."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


class Ledger:
    """Produces uniquely keyed native events and counts, per key, what became of them."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        results_topic: str,
        dlq_topic: str,
        store_url: str,
        functions: Sequence[str] = ("shape", "colours"),
    ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.results_topic, self.dlq_topic = results_topic, dlq_topic
        self.store_url, self.functions = store_url, tuple(functions)
        self.produced: Counter[str] = Counter()
        self.expected_dlq: dict[str, str] = {}
        self.lanes: dict[str, str] = {}  # key -> "upload" or "backfill"
        self.removed: set[str] = set()  # keys whose object was removed after their create
        self.backfill_topic: str | None = None
        self.backfill_share = 0.0
        self._routed = 0
        self._engine = sa.create_engine(store_url, poolclass=sa.NullPool)

    # -- producing ----------------------------------------------------------------------------
    def backfill(self, topic: str, share: float) -> None:
        """Send ``share`` of the events :meth:`produce` sends from now on to the backfill lane
        ``topic`` (spread evenly: with 0.5 every other event)."""
        if not 0.0 < share <= 1.0:
            raise ValueError("backfill share must be in (0, 1]")
        self.backfill_topic, self.backfill_share = topic, share

    def _lane(self) -> tuple[str, str]:
        """The lane and topic of the next event."""
        n, self._routed = self._routed, self._routed + 1
        share = self.backfill_share
        if self.backfill_topic and int((n + 1) * share) > int(n * share):
            return "backfill", self.backfill_topic
        return "upload", self.topic

    def produce(
        self,
        events: Iterable[tuple[str, bytes | None]],
        expect_reason: str | None = None,
        producer_config: dict[str, Any] | None = None,
        upload_only: bool = False,
    ) -> int:
        """Send ``(key, value)`` pairs keyed by ``key``, each on its lane (see :meth:`backfill`;
        ``upload_only``: all on the upload lane); ``expect_reason`` marks them as bad input that
        must end in the DLQ with that reason."""
        producer = KafkaProducer(
            **(producer_config or {"bootstrap_servers": self.bootstrap}), acks="all", linger_ms=5
        )
        count = 0
        for key, value in events:
            lane, topic = ("upload", self.topic) if upload_only else self._lane()
            if self.lanes.setdefault(key, lane) != lane:
                raise AssertionError(f"{key} produced on both lanes: no order between them")
            producer.send(topic, key=key.encode(), value=value)
            self.produced[key] += 1
            if expect_reason:
                self.expected_dlq[key] = expect_reason
            count += 1
        producer.flush(60)
        producer.close()
        return count

    def produce_removals(self, events: Iterable[tuple[str, bytes]]) -> int:
        """Send removals of created keys on their create's lane (one partition, so after it):
        these keys must end with no current result and no embedding."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        count = 0
        for key, value in events:
            if key not in self.produced:
                raise AssertionError(f"removal of {key}, never created")
            topic = self.backfill_topic if self.lanes[key] == "backfill" else self.topic
            producer.send(topic, key=key.encode(), value=value)
            self.removed.add(key)
            count += 1
        producer.flush(60)
        producer.close()
        return count

    def native_events(self, bucket: str, objects: Sequence[str], count: int, prefix: str = "a"):
        """``count`` native events with unique asset ids over a pool of uploaded ``objects``."""
        start = len(self.produced)
        for i in range(start, start + count):
            asset_id = f"{prefix}-{i:06d}"
            uri = f"s3://{bucket}/{objects[i % len(objects)]}"
            yield asset_id, json.dumps({"asset_id": asset_id, "uri": uri}).encode()

    # -- reading ------------------------------------------------------------------------------
    def stored_count(self) -> int:
        """Assets with a current result for every function (cheap; polled while waiting)."""
        try:
            with self._engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text(
                            "select count(*) from (select asset_id from function_results"
                            " group by asset_id having count(*) = :n) x"
                        ),
                        {"n": len(self.functions)},
                    ).scalar_one()
                )
        except sa.exc.SQLAlchemyError:  # tables not created yet, or the database is down
            return 0

    def _store(self) -> tuple[set[str], int]:
        with self._engine.connect() as conn:
            complete = {
                row[0]
                for row in conn.execute(
                    sa.text(
                        "select asset_id from function_results group by asset_id"
                        " having count(*) = :n"
                    ),
                    {"n": len(self.functions)},
                )
            }
            # More than one current row for one label, or tags left from another model version
            # than the function's current result: both mean a replay was applied twice.
            repeated = conn.execute(
                sa.text(
                    "select count(*) from (select asset_id, function, label from tags"
                    " group by asset_id, function, label having count(*) > 1) x"
                )
            ).scalar_one()
            stale = conn.execute(
                sa.text(
                    "select count(*) from tags t join function_results f"
                    " on f.asset_id = t.asset_id and f.function = t.function"
                    " where f.model_version <> t.model_version"
                )
            ).scalar_one()
        return complete, int(repeated) + int(stale)

    def figures(
        self,
        scenario: str,
        logs: Iterable[Path] = (),
        recover_s: float | None = None,
        **extra: Any,
    ) -> Figures:
        stored_keys, duplicates = self._store()
        results = Counter(r.key.decode() for r in read_all(self.bootstrap, self.results_topic))
        dead = read_all(self.bootstrap, self.dlq_topic)
        self.dlq_reasons: dict[str, Counter[str]] = {}
        for record in dead:
            headers = {k: v.decode() for k, v in record.headers}
            key = headers.get("tagfleet-asset-id") or (record.key or b"").decode()
            self.dlq_reasons.setdefault(key, Counter())[headers["tagfleet-reason"]] += 1
        self.stored_keys = stored_keys
        # a removed key's create and removal each complete once: it is counted as removed
        removed = set(self.produced) & self.removed
        produced = set(self.produced) - removed
        stored = produced & stored_keys
        dead_keys = produced & set(self.dlq_reasons)
        deliveries = Counter(
            {k: results.get(k, 0) + sum(self.dlq_reasons.get(k, {}).values()) for k in produced}
        )
        log = scan_logs(logs)
        lost_keys = produced - stored - dead_keys
        if self.backfill_topic:  # each lane's share of the outcome
            for lane in ("upload", "backfill"):
                keys = {k for k in produced if self.lanes.get(k) == lane}
                extra[f"{lane}_produced"] = len(keys)
                extra[f"{lane}_stored"] = len(keys & stored)
                extra[f"{lane}_lost"] = len(keys & lost_keys)
        if removed:
            # still current after its removal (or dead-lettered): the removal was not applied
            extra["removed"] = len(removed)
            extra["removed_but_current"] = len(removed & (stored_keys | set(self.dlq_reasons)))
        figures = Figures(
            scenario=scenario,
            produced=len(produced),
            stored=len(stored),
            dead_lettered=len(dead_keys),
            lost=len(lost_keys),
            duplicates=duplicates + len(stored & dead_keys),
            redeliveries=sum(max(0, n - 1) for n in deliveries.values()),
            max_attempts=max(deliveries.values(), default=0),
            recover_s=recover_s,
            extra={**{k: v for k, v in log.items() if v}, **extra},
        )
        FIGURES.append(asdict(figures))
        print(figures.line())
        return figures

    def embedding_faults(self, location: str | Path, backbones: Sequence[str]) -> dict[str, Any]:
        """What is wrong with the embedding store at ``location`` after :meth:`figures` (empty:
        nothing): per backbone, one row per stored live asset, no duplicates (rows counted ==
        distinct asset ids), no asset missing, none for a removed asset."""
        from models.embedding_store import open_embedding_store

        store = open_embedding_store(str(location))
        live = (set(self.produced) - self.removed) & self.stored_keys
        faults: dict[str, Any] = {}
        if sorted(store.backbones()) != sorted(backbones):
            faults["backbones"] = {"stored": store.backbones(), "fleet": list(backbones)}
        for backbone in backbones:
            ids = [i for batch, _ in store.scan(backbone) for i in batch]
            distinct, count = set(ids), store.count(backbone)
            wrong = {
                "duplicates": count - len(distinct),
                "scanned_twice": len(ids) - len(distinct),
                "missing": sorted(live - distinct)[:5],
                "of_removed": sorted(distinct & self.removed)[:5],
                "not_stored": sorted(distinct - live - self.removed)[:5],
            }
            if any(wrong.values()):
                faults[backbone] = {"rows": count, "live": len(live), **wrong}
        return faults

    def wrong_dlq_reasons(self) -> dict[str, Any]:
        """Keys produced as bad input whose DLQ records do not carry the expected reason."""
        return {
            key: dict(self.dlq_reasons.get(key, {}))
            for key, reason in self.expected_dlq.items()
            if set(self.dlq_reasons.get(key, {})) != {reason}
        }

    def close(self) -> None:
        self._engine.dispose()


def scan_logs(paths: Iterable[Path]) -> Counter[str]:
    """Counts of the interesting lines of the consumers' JSON logs."""
    counts: Counter[str] = Counter()
    for path in paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry.get("message")
            if message == "failpoint":
                counts[f"{entry['action']}@{entry['point']}"] += 1
            elif message == "rebalance":
                counts[f"rebalance_{entry['kind']}"] += 1
            elif message in ("transient fault, retrying", "fetch failed, will retry"):
                counts["transient_logged"] += 1
            elif entry.get("level") == "CRITICAL":
                counts["critical"] += 1
    return counts
