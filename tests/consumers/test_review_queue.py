"""The review queue as a stream (issue 18 item 3): a running consumer flags predictions into
the review topic and the review table, capped per label and per hour, each asset once, on
the real stack; which scores are flagged; Label Studio's task form checked against its
documented task schema."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    native_event,
    produce,
    read_topic,
    upload_images,
    wait_until,
)

from consumers.domain import AssetResult, SourcePosition
from consumers.review.flagging import ReviewPolicy, flag
from consumers.review.formats import label_studio_task
from consumers.review.queue import ReviewQueue
from consumers.store import TagStore
from consumers.store.models import review_items

pytestmark = pytest.mark.integration

# Label Studio's task import format, as its documentation states it ("Import pre-annotated
# data", "Label Studio JSON format of annotated tasks"): a task is an object whose "data"
# holds what the labelling config reads ($image); "predictions" a list of objects with a
# "result" list of regions, each naming "from_name" (the control tag), "to_name" (the object
# tag), "type" and "value", plus an optional "score" and "model_version".
LABEL_STUDIO_TASK = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "integer"},
        "data": {
            "type": "object",
            "required": ["image"],
            "properties": {"image": {"type": "string", "pattern": "^(s3|gs|https?)://"}},
        },
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["result"],
                "properties": {
                    "model_version": {"type": "string"},
                    "score": {"type": "number"},
                    "result": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["from_name", "to_name", "type", "value"],
                            "properties": {
                                "id": {"type": "string"},
                                "from_name": {"type": "string"},
                                "to_name": {"type": "string"},
                                "type": {
                                    "enum": [
                                        "choices",
                                        "labels",
                                        "rectanglelabels",
                                        "textarea",
                                        "rating",
                                    ]
                                },
                                "value": {
                                    "type": "object",
                                    "properties": {
                                        "choices": {"type": "array", "items": {"type": "string"}}
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "annotations": {"type": "array"},
    },
}


def _result(asset_id: str, classify: dict[str, float], tags: dict[str, float]) -> AssetResult:
    best = max(classify, key=lambda k: classify[k])
    return AssetResult(
        asset_id=asset_id,
        uri=asset_id,
        etag="e",
        width=10,
        height=10,
        functions={
            "shape": {
                "type": "classify",
                "version": "v1",
                "label": best,
                "score": classify[best],
                "scores": classify,
            },
            "colours": {
                "type": "tags",
                "version": "v1",
                "tags": [{"label": k, "score": v} for k, v in tags.items() if v >= 0.5],
                "scores": tags,
                "thresholds": dict.fromkeys(tags, 0.5),
            },
        },
        source=SourcePosition("assets", 0, 1),
        processed_at=datetime(2026, 12, 1, tzinfo=UTC),
        tenant="acme",
    )


def test_scores_near_the_thresholds_are_flagged_and_nothing_else() -> None:
    policy = ReviewPolicy(margin=0.1, band=0.05)
    near = _result("s3://b/near", {"circle": 0.46, "square": 0.40}, {"red": 0.53, "blue": 0.1})
    far = _result("s3://b/far", {"circle": 0.9, "square": 0.05}, {"red": 0.9, "blue": 0.1})
    edge = _result("s3://b/edge", {"circle": 0.5, "square": 0.39}, {"red": 0.44, "blue": 0.1})
    assert [(c.function, c.reason, c.label) for c in flag(near, policy)] == [
        ("colours", "near_threshold", "red"),
        ("shape", "low_margin", "circle"),
    ]
    assert flag(far, policy) == []
    assert flag(edge, policy) == []  # margin 0.11, red 0.06 below its threshold


def test_a_shadow_that_disagrees_is_flagged_and_spot_checks_sample_the_rest() -> None:
    from dataclasses import replace

    policy = ReviewPolicy(margin=0.1, band=0.05)
    sure = _result("s3://b/sure", {"circle": 0.9, "square": 0.05}, {"red": 0.9, "blue": 0.1})
    shadow = {**sure.functions["shape"], "version": "v2", "label": "square"}
    same = {**sure.functions["colours"], "version": "v2"}
    flagged = flag(replace(sure, shadows={"shape": shadow, "colours": same}), policy)
    assert [(c.function, c.reason, c.label) for c in flagged] == [
        ("shape", "shadow_disagreement", "circle")
    ]
    everything = ReviewPolicy(margin=0.1, band=0.05, spot_rate=1.0)
    assert {c.reason for c in flag(sure, everything)} == {"spot_check"}
    results = [replace(sure, asset_id=f"s3://b/{i}", uri=f"s3://b/{i}") for i in range(400)]
    sampled = sum(len(flag(r, ReviewPolicy(spot_rate=0.1))) for r in results)
    assert 40 <= sampled <= 120, sampled  # about 10 % of 800 predictions


def _detect(asset_id: str, boxes: list[tuple[str, float]], **extra: Any) -> AssetResult:
    objects = [{"label": k, "score": v, "box": [1.0, 1.0, 5.0, 5.0]} for k, v in boxes]
    obj = {"type": "detect", "version": "v1", "objects": objects, **extra}
    return AssetResult(
        asset_id=asset_id,
        uri=asset_id,
        etag="e",
        width=10,
        height=10,
        functions={"logos": obj},
        source=SourcePosition("assets", 0, 1),
        processed_at=datetime(2026, 12, 1, tzinfo=UTC),
        tenant="acme",
    )


def test_detect_boxes_near_their_threshold_are_flagged_with_the_spot_checks() -> None:
    from dataclasses import replace

    policy = ReviewPolicy(band=0.05)
    limits = {"thresholds": {"logo": 0.5, "text": 0.4}}
    near = _detect("s3://b/near", [("logo", 0.9), ("text", 0.43), ("logo", 0.54)], **limits)
    [candidate] = flag(near, policy)
    assert (candidate.function, candidate.type, candidate.reason) == (
        "logos",
        "detect",
        "near_threshold",
    )
    # the box closest to its threshold is proposed; the scores are each label's best box
    assert (candidate.label, candidate.score) == ("text", 0.43)
    assert candidate.scores == {"logo": 0.9, "text": 0.43}
    sure = _detect("s3://b/sure", [("logo", 0.9), ("text", 0.46)], **limits)
    assert flag(sure, policy) == []  # 0.4 and 0.06 above their thresholds
    assert flag(_detect("s3://b/none", []), policy) == []
    # a result written before detect results carried thresholds: not flagged by the band
    assert flag(_detect("s3://b/old", [("logo", 0.51)]), policy) == []
    spot = flag(sure, ReviewPolicy(band=0.05, spot_rate=1.0))
    assert [(c.reason, c.label, c.score) for c in spot] == [("spot_check", "logo", 0.9)]
    assert flag(_detect("s3://b/empty", [], **limits), ReviewPolicy(spot_rate=1.0)) == []
    shadow = {**sure.functions["logos"], "version": "v2", "objects": []}
    [disagree] = flag(replace(sure, shadows={"logos": shadow}), policy)
    assert (disagree.reason, disagree.label) == ("shadow_disagreement", "logo")
    # the candidates (boxes down to the head's floor) show the band's lower half too
    below = _detect(
        "s3://b/below",
        [("logo", 0.9)],
        candidates=[
            {"label": "logo", "score": 0.9, "box": [1.0, 1.0, 5.0, 5.0]},
            {"label": "logo", "score": 0.47, "box": [6.0, 6.0, 9.0, 9.0]},
            {"label": "text", "score": 0.2, "box": [1.0, 6.0, 4.0, 9.0]},
        ],
        **limits,
    )
    [lower] = flag(below, policy)
    assert (lower.reason, lower.label, lower.score) == ("near_threshold", "logo", 0.47)
    assert lower.scores == {"logo": 0.9, "text": 0.2}
    far_below = replace(
        below,
        functions={
            "logos": {**below.functions["logos"], "candidates": [{"label": "text", "score": 0.2}]}
        },
    )
    assert flag(far_below, policy) == []


def test_queue_caps_and_dedup_on_postgres(pg_url: str) -> None:
    store = TagStore(pg_url)
    store.upgrade()
    results = [
        _result(f"s3://b/{i:02d}", {"circle": 0.46, "square": 0.40}, {"red": 0.9, "blue": 0.1})
        for i in range(6)
    ]
    store.save(results)
    queue = ReviewQueue(engine=store.engine, producer=None, topic="", max_per_label_hour=4)
    first = queue.enqueue(results[:3])
    again = queue.enqueue(results[:3])  # a replay
    rest = queue.enqueue(results[3:])
    assert [i["asset_id"] for i in first] == ["s3://b/00", "s3://b/01", "s3://b/02"]
    assert again == []
    assert [i["asset_id"] for i in rest] == ["s3://b/03"]  # circle reached its 4 an hour
    capped = ReviewQueue(engine=store.engine, producer=None, topic="", max_per_hour=4)
    assert capped.enqueue(results) == []  # 4 items in the last hour already
    store.close()


def test_a_running_consumer_streams_capped_deduplicated_reviews(
    stack: dict[str, str],
    kafka_bootstrap: str,
    new_topic: Any,
    new_bucket: Any,
    s3: Any,
    pg_url: str,
    fleet_path: Path,
    tmp_path: Path,
) -> None:
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 24)
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    reviews = new_topic(partitions=1)
    events = [native_event(bucket, k, tenant="acme") for k in keys]
    cap = 3
    migrated = TagStore(pg_url)
    migrated.upgrade()
    migrated.close()
    consumer = ConsumerProcess(
        tmp_path / "consumer.log",
        {**env_for(stack), "TAGFLEET_REVIEW": "true"},
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        metrics_port=free_port(),
        batch_size=4,
        review_topic=reviews,
        review_format="label-studio",
        review_margin=1.0,  # every classify result is a candidate: the caps decide
        review_band=1.0,  # every tags result too
        review_max_per_label_hour=cap,
    )
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        produce(kafka_bootstrap, topic, events)
        wait_until(lambda: _stored(engine) == 2 * len(keys), 300, 1, "every result stored")
        produce(kafka_bootstrap, topic, events)  # every event again: a replay
        wait_until(lambda: _consumed(consumer) >= 2 * len(keys), 300, 1, "the replay consumed")
        rows = _rows(engine)
        records = read_topic(kafka_bootstrap, reviews, len(rows), timeout_s=60)
    finally:
        consumer.terminate()
        engine.dispose()
    assert rows, consumer.logs()[-3000:]
    pairs = [(r["asset_id"], r["function"]) for r in rows]
    assert len(pairs) == len(set(pairs)), "an asset queued twice for one function"
    per_label = Counter((r["function"], r["label"]) for r in rows)
    assert max(per_label.values()) <= cap, per_label
    proposals = _proposals(pg_url)
    for key, n in Counter(proposals.values()).items():
        assert per_label[key] == min(cap, n), (key, n, per_label)
    tasks = [json.loads(r.value) for r in records]
    assert len(tasks) == len(rows)
    for task in tasks:
        jsonschema.validate(task, LABEL_STUDIO_TASK)
    assert sorted((t["data"]["asset_id"], t["data"]["function"]) for t in tasks) == sorted(pairs)
    assert {t["data"]["tenant"] for t in tasks} == {"acme"}
    assert all(r.key.decode() == json.loads(r.value)["data"]["asset_id"] for r in records)


def _stored(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM function_results")).scalar_one())


def _consumed(consumer: ConsumerProcess) -> int:
    _, text = consumer.get("/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tagfleet_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(review_items)).mappings()]


def _proposals(url: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(asset, function) -> (function, proposed label) by the same rule, from the store."""
    store = TagStore(url)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT asset_id, function, result FROM function_results"))
        out = {}
        policy = ReviewPolicy(margin=1.0, band=1.0)
        for asset_id, function, obj in rows:
            fake = AssetResult(
                asset_id, asset_id, None, 1, 1, {function: obj}, None, datetime.now(UTC)
            )
            for c in flag(fake, policy):
                out[(asset_id, function)] = (function, c.label or "")
    store.close()
    return out


def test_label_studio_form_of_an_item() -> None:
    item = {
        "item": 7,
        "asset_id": "s3://b/k.png",
        "uri": "s3://b/k.png",
        "tenant": "acme",
        "function": "shape",
        "type": "classify",
        "reason": "low_margin",
        "label": "circle",
        "score": 0.46,
        "scores": {"circle": 0.46},
        "model_version": "v1",
        "created_at": "2026-12-01T00:00:00Z",
    }
    task = label_studio_task(item)
    jsonschema.validate(task, LABEL_STUDIO_TASK)
    assert task["predictions"][0]["result"][0]["value"] == {"choices": ["circle"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"predictions": []}, LABEL_STUDIO_TASK)  # the schema has teeth
