"""Priority lanes (issue 19 item 6): upload latency with and without a saturated backfill lane.

Two runs of one ``tagfleet consume`` each, on fresh topics, group and database:
1. **alone**: ``--uploads`` upload events on the upload topic at ``--rate`` per second;
2. **with backfill**: first ``--backfill`` events on the backfill topic (the asset set
   cycled; thousands, more than the run can drain), then, once the consumer has started on
   them, the same upload events at the same rate.
For each upload: the time from its production to its result event (p50, p95, p99); for the
backfill lane: events committed while the uploads ran (it must progress) and what was left
(it must still be saturated at the end). The upload assets are not in the backfill set.

    python -m benchmarks.priority_lanes [--uploads 60] [--rate 1] [--backfill 3000]
        [--images 300] [--setting backfill_max_in_flight=8 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
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
    write_results,
)
from benchmarks.end_to_end import Topics, committed, database, events, pct
from benchmarks.stack import stack_env

LOGS = REPO / "var" / "bench" / "logs"


def _send_uploads(
    bootstrap: str, topic: str, bucket: str, uploads: list[Asset], rate: float
) -> dict[bytes, float]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    sent: dict[bytes, float] = {}
    start = time.time()
    for i, asset in enumerate(uploads):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        ((key, value),) = events(bucket, [asset], event_time=True)
        sent[key] = time.time()
        producer.send(topic, key=key, value=value, timestamp_ms=int(sent[key] * 1000))
    producer.flush(30)
    producer.close()
    return sent


def run(
    args: argparse.Namespace, uploads: list[Asset], library: list[Asset], fleet: Path, backfill: int
) -> dict[str, Any]:
    """One consumer; ``backfill`` events first (0: none), then the uploads."""
    from harness import ConsumerProcess, free_port, produce, read_topic, wait_until

    env = stack_env()
    bootstrap = env["TAGFLEET_BOOTSTRAP_SERVERS"]
    rid = run_id()
    topics = Topics(bootstrap, rid, args.partitions, backfill=True)
    group = f"bench-{rid}"
    LOGS.mkdir(parents=True, exist_ok=True)
    extra = {f"TAGFLEET_{k.upper()}": v for k, v in (s.split("=", 1) for s in args.setting)}
    figures: dict[str, Any] = {
        "backfill_events": backfill,
        "settings": dict(s.split("=", 1) for s in args.setting),
    }
    with database(env["TAGFLEET_TEST_PG_URL"], f"bench_{rid.replace('-', '_')}") as url:
        consumer = ConsumerProcess(
            LOGS / f"{rid}-lanes.log",
            {**env, "TAGFLEET_LOG_LEVEL": "WARNING", **extra},
            bootstrap_servers=bootstrap,
            topic=topics.names["assets"],
            group_id=group,
            results_topic=topics.names["tags"],
            dlq_topic=topics.names["dlq"],
            store=url,
            fleet=fleet,
            metrics_port=free_port(),
        )
        try:
            wait_until(lambda: consumer.get("/readyz")[0] == 200, 180, what="consumer ready")
            if backfill:
                batch = events(
                    args.bucket, [library[i % len(library)] for i in range(backfill)], False
                )
                produce(bootstrap, topics.names["backfill"], batch)
                wait_until(
                    lambda: committed(topics.admin, group, topics.names["backfill"]) > 0,
                    120,
                    what="backfill started",
                )
            before = committed(topics.admin, group, topics.names["backfill"])
            started = time.time()
            sent = _send_uploads(bootstrap, topics.names["assets"], args.bucket, uploads, args.rate)
            wait_until(
                lambda: committed(topics.admin, group, topics.names["assets"]) >= len(uploads),
                300,
                what="uploads committed",
            )
            elapsed = time.time() - started
            after = committed(topics.admin, group, topics.names["backfill"])
            if not consumer.alive():
                raise RuntimeError(f"the consumer died; see {LOGS}")
        finally:
            code = consumer.terminate()
        results = read_topic(bootstrap, topics.names["tags"], expected=len(uploads), timeout_s=120)
        ages = sorted(r.timestamp / 1000 - sent[r.key] for r in results if r.key in sent)
        figures.update(
            exit_code=code,
            uploads=len(uploads),
            upload_results=len(ages),
            latency_s={
                "p50": pct(ages, 50),
                "p95": pct(ages, 95),
                "p99": pct(ages, 99),
                "mean": statistics.fmean(ages),
            },
            seconds=elapsed,
            backfill_committed_during_uploads=after - before,
            backfill_rate=(after - before) / elapsed,
            backfill_left_at_end=backfill - after if backfill else 0,
        )
    topics.delete()
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_for(__doc__)
    add_common_args(parser)
    parser.set_defaults(images=300, repeats=1)
    parser.add_argument("--uploads", type=int, default=60, help="upload events (default 60)")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="upload events per second (default 1)"
    )
    parser.add_argument(
        "--backfill",
        type=int,
        default=3000,
        help="backfill events queued before the uploads (default 3000)",
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions of each lane's topic (default 4)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for both runs (TAGFLEET_<NAME>), e.g. backfill_max_in_flight=8",
    )
    args = parser.parse_args(argv)
    assets = assets_in_s3(args)
    uploads, library = assets[: args.uploads], assets[args.uploads :]
    if not library:
        parser.error("--images must exceed --uploads (the backfill set is the rest)")
    fleet = bench_fleet(args.model, fleet_dir(args.model))
    alone = run(args, uploads, library, fleet, backfill=0)
    loaded = run(args, uploads, library, fleet, backfill=args.backfill)
    ratio = loaded["latency_s"]["p95"] / alone["latency_s"]["p95"]
    figures = {
        "alone": alone,
        "with_backfill": loaded,
        "p95_ratio": ratio,
        "rate": args.rate,
        "model": args.model,
    }
    print(
        f"upload p95 alone {alone['latency_s']['p95']:.3f}s, with {args.backfill} backfill"
        f" {loaded['latency_s']['p95']:.3f}s (x{ratio:.2f}); backfill"
        f" {loaded['backfill_rate']:.1f} events/s meanwhile,"
        f" {loaded['backfill_left_at_end']} left at the end"
    )
    write_results(Path(args.out), "priority-lanes", figures)
    return figures


if __name__ == "__main__":
    main()
