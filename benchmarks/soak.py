"""Soak: N uniquely keyed events through one consumer, resident memory sampled.

    eval "$(infra/stack.sh env)"; python benchmarks/soak.py [--events 20000] [--warmup 2000]

Runs against the local stack (``infra/stack.sh up``): a fresh topic, bucket and SQLite store, the
tiny two-function test fleet. Samples the consumer's RSS (``/proc/PID/status``) every second and
prints RSS after warm-up, at the end, the peak, and the growth after warm-up (the figure of
``docs/reliability.md``; the target is under 10 %). Exit 1 when growth is 10 % or more.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "consumers"), str(REPO / "tests" / "faults"), str(REPO)]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events (default: 20000)")
    parser.add_argument("--warmup", type=int, default=2_000, help="warm-up events (default: 2000)")
    args = parser.parse_args()

    import boto3
    from harness import ConsumerProcess, build_test_fleet, free_port, group_lag, image_bytes
    from kafka import KafkaAdminClient
    from ledger import Ledger

    kafka = os.environ.get("TAGFLEET_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    run = uuid.uuid4().hex[:10]
    topic, results, dlq = f"soak-{run}", f"soak-{run}.out", f"soak-{run}.dlq"
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    admin.create_topics(
        {t: {"num_partitions": 4, "replication_factor": 1} for t in (topic, results, dlq)},
        timeout_ms=30_000,
        wait_for_metadata=True,
    )
    s3 = boto3.client("s3")
    bucket = f"soak-{run}"
    s3.create_bucket(Bucket=bucket)
    objects = [f"img/{i}.png" for i in range(64)]
    for i, key in enumerate(objects):
        s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i, size=(320 + i, 240)))
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    store = f"sqlite:///{work / 'tags.db'}"
    ledger = Ledger(kafka, topic, results, dlq, store)
    ledger.produce(ledger.native_events(bucket, objects, args.events))
    consumer = ConsumerProcess(
        work / "consumer.log",
        {"TAGFLEET_LOG_LEVEL": "WARNING"},
        bootstrap_servers=kafka,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=store,
        fleet=build_test_fleet(work),
        metrics_port=free_port(),
        asset_id_binding="any",  # unique ids over a shared pool of objects
    )
    started = time.monotonic()
    samples: list[tuple[int, float]] = []
    while group_lag(admin, kafka, f"g-{topic}", topic) != 0:
        if not consumer.alive():
            print(consumer.logs()[-3000:])
            return 2
        samples.append((ledger.stored_count(), rss_mib(consumer.proc.pid)))
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    consumer.terminate()
    figures = ledger.figures("soak", [work / "consumer.log"], None)
    warm = next(rss for stored, rss in samples if stored >= args.warmup)
    end, peak = samples[-1][1], max(rss for _, rss in samples)
    growth = 100 * (end - warm) / warm
    print(
        f"soak: {args.events} events in {elapsed:.0f}s ({args.events / elapsed:.0f}/s);"
        f" RSS after {args.warmup} warm-up events {warm:.0f} MiB, at the end {end:.0f} MiB,"
        f" peak {peak:.0f} MiB; growth after warm-up {growth:+.1f}%; lost {figures.lost},"
        f" duplicates {figures.duplicates}"
    )
    return 0 if growth < 10 and figures.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
