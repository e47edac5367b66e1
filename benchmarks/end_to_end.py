"""End to end through Kafka, S3 and PostgreSQL with ``tagfleet consume`` as subprocesses.

Modes (each on fresh, uniquely named topics, consumer group and database):
- ``throughput`` (E): one event per asset is produced to Kafka while the consumers (already
  started and ready) wait; E = events / (last offset committed - first event produced);
- ``latency``: the events are produced at a steady ``--rate`` per second; for each event, the
  time from its production (its event time) to its result event on the results topic;
  p50, p95, p99.
``--consumers N`` runs N processes in one group (scaling). Peak memory is each consumer's
VmHWM plus its decode processes' VmHWM. After each run the store is checked to hold every asset.

    python -m benchmarks.end_to_end [--mode throughput|latency] [--consumers 1] [--rate R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.assets import Asset
from benchmarks.common import (
    REPO,
    add_common_args,
    assets_in_s3,
    bench_fleet,
    fleet_dir,
    parser_for,
    run_id,
    tree_peak_mb,
    write_results,
)
from benchmarks.stack import stack_env

LOGS = REPO / "var" / "bench" / "logs"


def events(bucket: str, assets: list[Asset], event_time: bool) -> list[tuple[bytes, bytes]]:
    from harness import native_event

    extra: dict[str, Any] = {}
    if event_time:
        extra["event_time"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return [native_event(bucket, a.key, **extra) for a in assets]


@contextmanager
def database(admin_url: str, name: str):
    """A fresh PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def stored_assets(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM assets").scalar_one()
    engine.dispose()
    return int(count)


class Topics:
    """Unique input, results and DLQ topics (and with ``backfill`` the input's backfill lane,
    ``<input>.backfill``), deleted afterwards."""

    def __init__(self, bootstrap: str, rid: str, partitions: int, backfill: bool = False) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic

        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.names = {k: f"bench-{rid}-{k}" for k in ("assets", "tags", "dlq")}
        inputs = ["assets"]
        if backfill:
            self.names["backfill"] = f"{self.names['assets']}.backfill"
            inputs.append("backfill")
        self.admin.create_topics(
            [
                *(NewTopic(self.names[k], partitions, 1) for k in inputs),
                NewTopic(self.names["tags"], 4, 1),
                NewTopic(self.names["dlq"], 1, 1),
            ]
        )

    def delete(self) -> None:
        self.admin.delete_topics(list(self.names.values()))
        self.admin.close()


def committed(admin: Any, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic``."""
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(max(0, m.offset) for tp, m in offsets.items() if tp.topic == topic)


def run(args: argparse.Namespace, assets: list[Asset], fleet: Path) -> dict[str, Any]:
    from harness import ConsumerProcess, free_port, produce, read_topic, wait_until

    env = stack_env()
    bootstrap = env["TAGFLEET_BOOTSTRAP_SERVERS"]
    rid = run_id()
    topics = Topics(bootstrap, rid, args.partitions)
    group = f"bench-{rid}"
    LOGS.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "mode": args.mode,
        "consumers": args.consumers,
        "events": len(assets),
        "partitions": args.partitions,
    }
    with database(env["TAGFLEET_TEST_PG_URL"], f"bench_{rid.replace('-', '_')}") as url:
        consumers = [
            ConsumerProcess(
                LOGS / f"{rid}-{i}.log",
                {**env, "TAGFLEET_LOG_LEVEL": "WARNING"},
                bootstrap_servers=bootstrap,
                topic=topics.names["assets"],
                group_id=group,
                results_topic=topics.names["tags"],
                dlq_topic=topics.names["dlq"],
                store=url,
                fleet=fleet,
                metrics_port=free_port(),
            )
            for i in range(args.consumers)
        ]
        try:
            for c in consumers:
                wait_until(lambda c=c: c.get("/readyz")[0] == 200, 180, what="consumer ready")
            peaks = [0.0] * len(consumers)
            started = time.time()
            sent = _produce(bootstrap, topics.names["assets"], args, assets, produce)
            while committed(topics.admin, group, topics.names["assets"]) < len(assets):
                peaks = _peaks(peaks, consumers)
                if not all(c.alive() for c in consumers):
                    raise RuntimeError(f"a consumer died; see {LOGS}")
                time.sleep(0.2)
            elapsed = time.time() - started
            peaks = _peaks(peaks, consumers)
        finally:
            codes = [c.terminate() for c in consumers]
        figures.update(
            seconds=elapsed,
            rate=len(assets) / elapsed,
            peak_rss_mb=peaks,
            exit_codes=codes,
            stored=stored_assets(url),
        )
        if args.mode == "latency":
            results = read_topic(bootstrap, topics.names["tags"], expected=len(assets))
            ages = sorted(r.timestamp / 1000 - sent[r.key] for r in results if r.key in sent)
            figures.update(
                offered_rate=args.rate,
                results=len(ages),
                latency_s={
                    "p50": pct(ages, 50),
                    "p95": pct(ages, 95),
                    "p99": pct(ages, 99),
                    "mean": statistics.fmean(ages),
                },
            )
    topics.delete()
    if figures["stored"] != len(assets):
        raise RuntimeError(f"stored {figures['stored']} assets of {len(assets)}")
    return figures


def _produce(
    bootstrap: str, topic: str, args: argparse.Namespace, assets: list[Asset], produce: Any
) -> dict[bytes, float]:
    """Produce one event per asset (paced at ``args.rate`` in latency mode); send times."""
    sent: dict[bytes, float] = {}
    if args.mode == "throughput":
        batch = events(args.bucket, assets, event_time=False)
        now = time.time()
        sent = {k: now for k, _ in batch}
        produce(bootstrap, topic, batch)
        return sent
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    start = time.time()
    for i, asset in enumerate(assets):
        delay = start + i / args.rate - time.time()
        if delay > 0:
            time.sleep(delay)
        ((key, value),) = events(args.bucket, [asset], event_time=True)
        sent[key] = time.time()
        producer.send(topic, key=key, value=value, timestamp_ms=int(sent[key] * 1000))
    producer.flush(30)
    producer.close()
    return sent


def _peaks(peaks: list[float], consumers: list[Any]) -> list[float]:
    return [max(p, tree_peak_mb(c.proc.pid) or 0) for p, c in zip(peaks, consumers, strict=True)]


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile of sorted ``values`` (nearest rank)."""
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_for(__doc__)
    add_common_args(parser)
    parser.add_argument(
        "--mode",
        choices=("throughput", "latency"),
        default="throughput",
        help="what to measure (default throughput)",
    )
    parser.add_argument(
        "--consumers", type=int, default=1, help="consumer processes in the group (default 1)"
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions of the input topic (default 4)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="latency mode: offered events/s (default: half of the last "
        "throughput result in --out)",
    )
    parser.add_argument(
        "--name", default=None, help="results file name (default e2e-<mode>-<consumers>)"
    )
    args = parser.parse_args(argv)
    assets = assets_in_s3(args)
    fleet = bench_fleet(args.model, fleet_dir(args.model))
    if args.mode == "latency" and args.rate is None:
        last = json.loads((Path(args.out) / "e2e-throughput-1.json").read_text())
        args.rate = last["rate"] / 2
    runs = [run(args, assets, fleet) for _ in range(args.repeats)]
    rates = [r["rate"] for r in runs]
    figures = {
        **runs[rates.index(statistics.median_low(rates))],
        "runs": rates,
        "rate": statistics.median(rates),
    }
    print(
        f"{args.mode} x{args.consumers}: {figures['rate']:.1f} events/s (runs {rates})"
        + (f", latency {figures['latency_s']}" if "latency_s" in figures else "")
    )
    name = args.name or f"e2e-{args.mode}-{args.consumers}"
    write_results(Path(args.out), name, figures)
    return figures


if __name__ == "__main__":
    main()
