"""Embeddings kept and content-hash dedup (issue 19 items 1 and 5), by the service on the real
stack: Kafka, moto's S3 server, PostgreSQL, the embedding store in a local folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    group_lag,
    image_bytes,
    native_event,
    produce,
    s3_notification,
    upload_images,
    wait_until,
)

from consumers.decode import DecodeLimits, decode_image
from models import load_fleet
from models.embedding_store import LanceEmbeddingStore, open_embedding_store

pytestmark = pytest.mark.integration


def _consumer(tmp_path: Path, stack: dict[str, str], **flags: Any) -> ConsumerProcess:
    return ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        metrics_port=free_port(),
        batch_size=8,
        **flags,
    )


def _drained(kafka_admin: Any, kafka_bootstrap: str, group: str, topic: str) -> bool:
    return group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0


def _metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if match and labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def test_every_asset_has_one_embedding_per_backbone_a_replay_adds_none_and_it_is_the_backbones(
    stack, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, fleet_path, tmp_path
):
    bucket = new_bucket("emb")
    keys = upload_images(s3, bucket, 12)  # keys with spaces, '+' and non-ASCII characters
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(1)
    location = str(tmp_path / "embeddings")
    events = [native_event(bucket, k, tenant="acme") for k in keys]
    produce(kafka_bootstrap, topic, events)
    group = f"g-{topic}"
    consumer = _consumer(
        tmp_path,
        stack,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        embeddings=location,
    )
    fleet = load_fleet(fleet_path, device="cpu")
    (backbone_key,) = fleet.backbones  # the test fleet: two functions on one tiny backbone
    ids = [f"s3://{bucket}/{k}" for k in keys]
    try:
        wait_until(lambda: _drained(kafka_admin, kafka_bootstrap, group, topic), 120, what="lag 0")
        store = open_embedding_store(location)
        assert isinstance(store, LanceEmbeddingStore)
        assert store.backbones() == [backbone_key]
        assert store.count(backbone_key) == len(keys)
        stored = store.get(backbone_key, ids)
        assert set(stored) == set(ids)
        assert {i for batch, _ in store.scan(backbone_key, tenant="acme") for i in batch} == set(
            ids
        )

        # the stored vector is the backbone's output for the image the service decoded
        backbone = fleet.backbones[backbone_key]
        for key, asset_id in zip(keys, ids, strict=True):
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            decoded = decode_image(data, fleet.input_size, DecodeLimits())
            with torch.no_grad():
                own = backbone.encode(decoded.array[None]).pooled[0].float().numpy()
            scale = float(np.abs(own).max())
            np.testing.assert_allclose(stored[asset_id], own, rtol=2e-3, atol=2e-3 * scale)

        # a replay of every event writes no second copy, and nothing at all
        version = store._open(backbone_key).version  # noqa: SLF001 - the table's commit count
        produce(kafka_bootstrap, topic, events)
        wait_until(lambda: _drained(kafka_admin, kafka_bootstrap, group, topic), 120, what="replay")
        assert store.count(backbone_key) == len(keys)
        assert store._open(backbone_key).version == version  # noqa: SLF001

        # a removal deletes the asset's embedding with its tags
        s3.delete_object(Bucket=bucket, Key=keys[0])
        produce(kafka_bootstrap, topic, [s3_notification(bucket, keys[0], "ObjectRemoved:Delete")])
        wait_until(lambda: store.count(backbone_key) == len(keys) - 1, 60, what="removal")
        assert store.get(backbone_key, [ids[0]]) == {}
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]


def test_the_same_bytes_under_five_keys_are_inferred_once_and_all_five_are_tagged(
    stack, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, fleet_path, tmp_path
):
    bucket = new_bucket("dup")
    same, other = image_bytes(3), image_bytes(8)
    keys = [f"copies/{i}.png" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=same)
    s3.put_object(Bucket=bucket, Key="other.png", Body=other)
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(1)
    location = str(tmp_path / "embeddings")
    produce(kafka_bootstrap, topic, [native_event(bucket, k) for k in [*keys, "other.png"]])
    group = f"g-{topic}"
    consumer = _consumer(
        tmp_path,
        stack,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        embeddings=location,
    )
    try:
        wait_until(lambda: _drained(kafka_admin, kafka_bootstrap, group, topic), 120, what="lag 0")
        # a sixth copy, once the first five are stored
        s3.put_object(Bucket=bucket, Key="copies/late.png", Body=same)
        produce(kafka_bootstrap, topic, [native_event(bucket, "copies/late.png")])
        wait_until(lambda: _drained(kafka_admin, kafka_bootstrap, group, topic), 60, what="late")
        status, metrics = consumer.get("/metrics")
        assert status == 200
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]

    # model calls: the images the fleet ran on (batch sizes summed) -- the copies once
    assert _metric(metrics, "tagfleet_batch_size_sum") == 2  # one copy and the other image
    assert _metric(metrics, "tagfleet_inference_reused_total") == 5

    copies = [f"s3://{bucket}/{k}" for k in [*keys, "copies/late.png"]]
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sa.text("asset_id, function, result"))
            .select_from(sa.text("function_results"))
            .where(sa.text(f"asset_id like 's3://{bucket}/%'"))
        ).all()
        hashes = dict(
            conn.execute(
                sa.text("select asset_id, content_hash from assets where asset_id like :p"),
                {"p": f"s3://{bucket}/%"},
            ).all()
        )
    engine.dispose()
    results_of: dict[str, dict[str, Any]] = {}
    for asset_id, function, result in rows:
        results_of.setdefault(asset_id, {})[function] = result
    assert set(results_of) == {*copies, f"s3://{bucket}/other.png"}  # every asset tagged
    assert {hashes[c] for c in copies} == {__import__("hashlib").sha256(same).hexdigest()}
    sources = {c: {r.get("reused_from") for r in results_of[c].values()} for c in copies}
    inferred = [c for c, s in sources.items() if s == {None}]
    assert len(inferred) == 1  # one copy ran the model, the others name it
    assert all(s == set(inferred) for c, s in sources.items() if c not in inferred)
    for copy in copies:  # the same results, asset ids distinct
        for function, result in results_of[copy].items():
            mine = {k: v for k, v in result.items() if k != "reused_from"}
            theirs = {k: v for k, v in results_of[inferred[0]][function].items()}
            assert mine == theirs

    store = open_embedding_store(location)
    (backbone_key,) = store.backbones()
    vectors = store.get(backbone_key, copies)
    assert set(vectors) == set(copies)  # the reused ones too, copied from the one inferred
    assert all(np.array_equal(v, vectors[inferred[0]]) for v in vectors.values())
