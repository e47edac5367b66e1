"""The tags API against a running consumer on the real stack (issue 18, first must-show):
answers equal the store's results; search pages through 1,000 assets with no duplicate and
no gap while the consumer keeps writing; the event's tenant is stored with its asset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_harness import ApiProcess, asset_path, json_of, make_key
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    native_event,
    produce,
    upload_images,
    wait_until,
)

from consumers.domain import AssetResult, SourcePosition
from consumers.store import TagStore

pytestmark = pytest.mark.integration

SEEDED = 1200  # 1,000 of them carry red >= 0.5
PAGE = 50


def _seed(store: TagStore) -> set[str]:
    """1,200 assets of tenant acme; 1,000 with colours/red at >= 0.5 (the rest at 0.3)."""
    matching = set()
    batch = []
    for i in range(SEEDED):
        asset_id = f"s3://seeded/{i:05d}.jpg"
        red = 0.5 + (i % 50) / 100 if i < 1000 else 0.3
        if red >= 0.5:
            matching.add(asset_id)
        scores = {"red": red, "blue": 0.25}
        batch.append(
            AssetResult(
                asset_id=asset_id,
                uri=asset_id,
                etag="e",
                width=96,
                height=72,
                functions={
                    "colours": {
                        "type": "tags",
                        "version": "seed",
                        "tags": [{"label": k, "score": v} for k, v in scores.items()],
                        "scores": scores,
                        "thresholds": dict.fromkeys(scores, 0.2),
                    }
                },
                source=SourcePosition("seed", 0, i),
                processed_at=datetime(2026, 12, 1, tzinfo=UTC),
                tenant="acme",
            )
        )
    for start in range(0, len(batch), 300):
        store.save(batch[start : start + 300])
    return matching


def _direct(engine: sa.Engine, tenant: str) -> set[str]:
    """The same question in plain SQL, straight at the store."""
    query = sa.text(
        "SELECT DISTINCT t.asset_id FROM tags t JOIN assets a ON a.asset_id = t.asset_id"
        " WHERE t.label = 'red' AND t.function = 'colours' AND t.score >= 0.5"
        " AND a.tenant = :tenant"
    )
    with engine.connect() as conn:
        return set(conn.scalars(query, {"tenant": tenant}))


def _stored(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM function_results WHERE source_topic <> 'seed'"
        return int(conn.execute(sa.text(query)).scalar_one())


def _all_pages(http: Any) -> tuple[list[str], int]:
    params: dict[str, Any] = {
        "label": "red",
        "function": "colours",
        "min_score": 0.5,
        "origin": "ai",
        "limit": PAGE,
    }
    seen: list[str] = []
    pages = 0
    while True:
        page = json_of(http.get("/v1/search", params=params))
        pages += 1
        assert len(page["items"]) <= PAGE
        seen += [item["asset_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return seen, pages
        params["cursor"] = page["next_cursor"]


@pytest.fixture
def consumer(
    stack: dict[str, str],
    kafka_bootstrap: str,
    new_topic: Any,
    new_bucket: Any,
    s3: Any,
    pg_url: str,
    fleet_path: Path,
    tmp_path: Path,
) -> Iterator[tuple[ConsumerProcess, list[str], str]]:
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 120)
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    store = TagStore(pg_url)
    store.upgrade()
    store.close()
    # all but the last event name tenant acme; the last names none (the default tenant)
    events = [native_event(bucket, k, tenant="acme") for k in keys[:-1]]
    events.append(native_event(bucket, keys[-1]))
    proc = ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        metrics_port=free_port(),
        batch_size=4,
    )
    try:
        produce(kafka_bootstrap, topic, events)
        yield proc, [f"s3://{bucket}/{k}" for k in keys], fleet_path.as_posix()
    finally:
        proc.terminate()


def test_api_equals_the_store_and_pages_hold_while_the_consumer_writes(
    consumer: tuple[ConsumerProcess, list[str], str], pg_url: str, tmp_path: Path
) -> None:
    proc, consumed, fleet = consumer
    store = TagStore(pg_url)
    engine = store.engine
    try:
        seeded = _seed(store)
        api = ApiProcess(tmp_path / "api.log", pg_url, fleet=fleet)
        key = make_key(pg_url, "acme", "read")
        try:
            with api.client(key) as http:
                # Page through while the consumer is writing: passes until one saw writes.
                passes = 0
                written_during_a_pass = False
                wait_until(lambda: _stored(engine) > 0, 180, 0.2, "the consumer's first result")
                while not written_during_a_pass:
                    before = _stored(engine)
                    seen, pages = _all_pages(http)
                    after = _stored(engine)
                    passes += 1
                    written_during_a_pass = after > before
                    assert len(seen) == len(set(seen)), "an asset listed twice"
                    assert seen == sorted(seen)
                    assert seeded <= set(seen), f"gaps: {sorted(seeded - set(seen))[:5]}"
                    assert set(seen) <= _direct(engine, "acme")
                    assert pages >= 1000 // PAGE
                    assert passes < 60 or written_during_a_pass, "the consumer wrote nothing"
                wait_until(
                    lambda: _stored(engine) >= 2 * len(consumed),
                    300,
                    1,
                    "every consumed asset stored",
                )
                # Quiet now: the pages are exactly the direct query's answer.
                seen, _ = _all_pages(http)
                assert seen == sorted(_direct(engine, "acme"))

                # Each asset's answer equals what the store holds.
                with engine.connect() as conn:
                    for asset_id in consumed[:-1]:
                        view = json_of(http.get(asset_path(asset_id)))
                        rows = conn.execute(
                            sa.text(
                                "SELECT function, model_version, result FROM function_results"
                                " WHERE asset_id = :a"
                            ),
                            {"a": asset_id},
                        ).all()
                        assert view["tenant"] == "acme"
                        assert {
                            f: (v["version"], v["result"]) for f, v in view["functions"].items()
                        } == {f: (version, result) for f, version, result in rows}
                        assert sorted(
                            (
                                t["function"],
                                t["label"],
                                t["score"],
                                t["model_version"],
                                t["threshold"],
                            )
                            for t in view["effective_tags"]
                        ) == sorted(
                            (t.function, t.label, t.score, t.model_version, t.threshold)
                            for t in store.tags_for_asset(asset_id)
                        )
                # The event without a tenant is the default tenant's, not acme's.
                assert http.get(asset_path(consumed[-1])).status_code == 404
            with api.client(make_key(pg_url, "default", "read")) as http:
                assert json_of(http.get(asset_path(consumed[-1])))["tenant"] == "default"
                assert http.get(asset_path(consumed[0])).status_code == 404
        finally:
            api.stop()
    finally:
        store.close()
    assert proc.alive()
