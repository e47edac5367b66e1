"""The naive consumer N: the loop most people write first, on the same data and fleet.

One message at a time (``max_poll_records=1``), a plain boto3 GET, a full-size decode
(``decode_image_full``), the fleet at batch 1, one store transaction per image, the result
event sent and awaited, then a synchronous offset commit per message. No threads of its own
(torch uses its default intra-op threads). Timed like E: from the first event produced to the
last offset committed, on fresh topics and a fresh database.

    python -m benchmarks.naive [--images 1000] [--limit 300]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_common_args,
    assets_in_s3,
    bench_fleet,
    fleet_dir,
    parser_for,
    peak_rss_mb,
    run_id,
    write_results,
)
from benchmarks.end_to_end import Topics, database, events, stored_assets
from benchmarks.stack import stack_env


def consume(consumer: Any, count: int, fleet: Any, store: Any, producer: Any, topic: str) -> None:
    """Process ``count`` messages, one by one, committing after each."""
    import boto3

    from consumers.decode import DecodeLimits, decode_image_full
    from consumers.domain import SourcePosition
    from consumers.events import EventPolicy, parse_event
    from consumers.results import build_result, encode_event, result_event

    s3 = boto3.session.Session().client("s3")
    policy, limits = EventPolicy(), DecodeLimits()
    for done, message in enumerate(consumer, start=1):
        (request,) = parse_event(message.value, message.key, policy)
        data = s3.get_object(Bucket=request.bucket, Key=request.key)["Body"].read()
        decoded = decode_image_full(data, fleet.input_size, limits)
        (functions,) = fleet.predict([decoded.array], [(decoded.width, decoded.height)])
        position = SourcePosition(message.topic, message.partition, message.offset)
        result = build_result(request, decoded, functions, position, datetime.now(UTC))
        store.save([result])
        producer.send(topic, key=message.key, value=encode_event(result_event(result))).get(30)
        consumer.commit()
        if done == count:
            return


def run(args: argparse.Namespace) -> dict[str, Any]:
    from harness import produce
    from kafka import KafkaConsumer, KafkaProducer

    from consumers.store import TagStore
    from models import load_fleet

    env = stack_env()
    bootstrap = env["TAGFLEET_BOOTSTRAP_SERVERS"]
    assets = assets_in_s3(args)[: args.limit or None]
    fleet = load_fleet(bench_fleet(args.model, fleet_dir(args.model)))
    rid = run_id()
    topics = Topics(bootstrap, rid, 4)
    with database(env["TAGFLEET_TEST_PG_URL"], f"bench_{rid.replace('-', '_')}") as url:
        store = TagStore(url)
        store.upgrade()
        consumer = KafkaConsumer(
            topics.names["assets"],
            bootstrap_servers=bootstrap,
            group_id=f"bench-{rid}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1,
        )
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        while not consumer.assignment():
            consumer.poll(100)
        started = time.time()
        produce(bootstrap, topics.names["assets"], events(args.bucket, assets, event_time=False))
        consume(consumer, len(assets), fleet, store, producer, topics.names["tags"])
        elapsed = time.time() - started
        consumer.close(autocommit=False)
        producer.close()
        store.close()
        stored = stored_assets(url)
    topics.delete()
    return {
        "events": len(assets),
        "seconds": elapsed,
        "rate": len(assets) / elapsed,
        "stored": stored,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = parser_for(__doc__)
    add_common_args(parser)
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="process only the first LIMIT assets; a multiple of 10 keeps the "
        "mix exact (default 0: all)",
    )
    args = parser.parse_args(argv)
    figures = run(args)
    print(
        f"naive: {figures['rate']:.2f} events/s ({figures['events']} in {figures['seconds']:.1f} s)"
    )
    write_results(Path(args.out), "naive", figures)
    return figures


if __name__ == "__main__":
    main()
