"""``tagfleet retag`` on 1,000,000 stored results in PostgreSQL (issue 19 item 2;
docs/benchmarks.md, "Retag").

Generates ``--assets`` assets (tenant ``acme``), each with one stored ``tags`` result of
function ``colours`` (8 labels, uniform scores, the model's threshold 0.5) and its tag rows,
in a fresh database of the local stack's PostgreSQL with ``INSERT ... SELECT
generate_series`` (no Python per row), then times :func:`consumers.retag.run.retag` in this
process (no model: none is loaded) three times:

1. new thresholds and a taxonomy (synonym, parent, dropped label): every tag set is
   rewritten and the assets whose tags changed get a result event on a fresh Kafka topic;
2. the same mapping again: every result read and compared, nothing written or sent;
3. with ``--dry-run-pass``, ``--dry-run`` of another threshold: read and compare only.

Reports rows/s, seconds, the events sent, the process's peak RSS (the run streams pages of
``--batch-size``: memory does not grow with the store) and the load average.

    python -m benchmarks.retag [--assets 1000000] [--batch-size 2000] [--dry-run-pass]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.api_search import stack_env

REPO = Path(__file__).resolve().parents[1]
LABELS = ["red", "green", "blue", "yellow", "cat", "dog", "car", "blurry"]
TAXONOMY = {
    "terms": {"car": ["automobile"]},
    "synonyms": {"automobile": ["auto"]},
    "parents": {"cat": "animal", "dog": "animal"},
    "drop": ["blurry"],
}


def generate(url: str, assets: int) -> float:
    """Fill the store; returns the seconds it took."""
    from consumers.store import TagStore

    store = TagStore(url)
    store.upgrade()
    scores = ", ".join(f"'{label}', round(random()::numeric, 4)" for label in LABELS)
    limits = ", ".join(f"'{label}', 0.5" for label in LABELS)
    started = time.perf_counter()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO assets (asset_id, uri, etag, width, height, removed, updated_at, tenant)"
            " SELECT 's3://bench/' || lpad(i::text, 8, '0') || '.jpg',"
            " 's3://bench/' || lpad(i::text, 8, '0') || '.jpg', 'e', 4000, 3000, false, now(),"
            " 'acme' FROM generate_series(1, %(n)s) AS i",
            {"n": assets},
        )
        result = (
            "jsonb_build_object('type', 'tags', 'version', 'v1', 'scores',"
            f" jsonb_build_object({scores}), 'thresholds', jsonb_build_object({limits}))"
        )
        conn.exec_driver_sql(
            "INSERT INTO function_results (asset_id, function, type, model_version, etag, result,"  # noqa: S608
            f" processed_at, stored_at) SELECT asset_id, 'colours', 'tags', 'v1', 'e', {result},"
            " now(), now() FROM assets"
        )
        # the model's tags: every label scored >= 0.5 (the result's own "tags" list is not
        # read by retag, which draws from "scores")
        conn.exec_driver_sql(
            "INSERT INTO tags (asset_id, function, label, ordinal, score, threshold,"
            " model_version, created_at)"
            " SELECT fr.asset_id, 'colours', s.key, 0, s.value::float, 0.5, 'v1', now()"
            " FROM function_results fr, jsonb_each_text(fr.result->'scores') AS s"
            " WHERE s.value::float >= 0.5"
        )
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    store.close()
    return time.perf_counter() - started


def timed(store: Any, **kwargs: Any) -> dict[str, Any]:
    from consumers.retag.run import retag

    started = time.perf_counter()
    report = retag(store, "colours", progress=sys.stderr.isatty(), **kwargs)
    seconds = time.perf_counter() - started
    out = {
        "seconds": round(seconds, 1),
        "rows_per_s": round(report.scanned / seconds),
        "results_read": report.scanned,
        "tag_sets_written": report.rewritten,
        "events_sent": report.changed,
        "tags_before": report.tags_before,
        "tags_after": report.tags_after,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out), file=sys.stderr, flush=True)  # each pass as it ends
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=int, default=1_000_000, help="stored results (1000000)")
    ap.add_argument("--batch-size", type=int, default=2000, help="results per transaction")
    ap.add_argument("--dry-run-pass", action="store_true", help="also time a --dry-run pass")
    args = ap.parse_args(argv)
    env = stack_env()
    admin = env["TAGFLEET_TEST_PG_URL"]
    name = f"bench_retag_{os.getpid()}"
    topic = f"bench-retag-{os.getpid()}"
    admin_engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    bootstrap = env["TAGFLEET_BOOTSTRAP_SERVERS"]
    from kafka.admin import KafkaAdminClient, NewTopic

    kafka_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    kafka_admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    producer = None
    try:
        seconds = generate(url, args.assets)
        print(f"generated in {seconds:.1f} s", file=sys.stderr, flush=True)
        from consumers.retag.taxonomy import parse_taxonomy
        from consumers.sinks import Producer
        from consumers.store import TagStore

        producer = Producer({"bootstrap_servers": bootstrap.split(",")})
        store = TagStore(url)
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM tags").scalar_one()
        taxonomy = parse_taxonomy(TAXONOMY)
        thresholds = {"*": 0.4, "red": 0.7}
        common = {"batch_size": args.batch_size, "producer": producer, "results_topic": topic}
        result = {
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "assets": args.assets,
            "tag_rows_before": rows,
            "generate_s": round(seconds, 1),
            "batch_size": args.batch_size,
            "new_mapping": timed(store, thresholds=thresholds, taxonomy=taxonomy, **common),
            "same_mapping_again": timed(store, thresholds=thresholds, taxonomy=taxonomy, **common),
            **(
                {
                    "dry_run": timed(
                        store, thresholds={"*": 0.6}, taxonomy=taxonomy, dry_run=True, **common
                    )
                }
                if args.dry_run_pass
                else {}
            ),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        store.close()
        print(json.dumps(result, indent=2))
        out = REPO / "var" / "bench" / "results" / "retag.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    finally:
        if producer is not None:
            producer.close()
        kafka_admin.delete_topics([topic])
        kafka_admin.close()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
