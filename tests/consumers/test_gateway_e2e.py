"""The service with VersityGW as its S3 server, end to end on the real stack (issue 14).

The gateway publishes its own bucket notifications to Kafka: nothing in these tests writes an
event but the ordering test, which re-publishes the gateway's own records, unchanged, onto
partitions it picks, in the reverse of the order they happened.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from gateway import PrivateGateway
from harness import ConsumerProcess, env_for, free_port, image_bytes, read_topic, wait_until
from kafka import KafkaProducer
from PIL import Image

pytestmark = pytest.mark.integration

# every character the key readings must survive: space, '+', '%', a literal '%20', '#', '&',
# '?', non-ASCII
KEY_FORMS = (
    "a/summer {i} été+{i}.png",
    "b/100% off #{i} & more?.png",
    "c/日本 ü %20+{i}.png",
    "d/a&b?c=d#{i} x+y.png",
)
MULTIPART = 4  # of the 200, uploaded in two parts (the first of 5 MiB, S3's minimum)


@pytest.fixture(scope="module")
def gateway(stack: dict[str, str], kafka_admin: Any) -> Iterator[PrivateGateway]:
    gw = PrivateGateway(stack).start()
    try:
        yield gw
    finally:
        gw.stop(kafka_admin)


def _consumer(
    tmp_path: Path, stack: dict[str, str], gw: PrivateGateway, **flags: Any
) -> ConsumerProcess:
    env = {**env_for(stack), **gw.s3_env()}
    return ConsumerProcess(
        tmp_path / "consumer.log", env, metrics_port=free_port(), batch_size=16, **flags
    )


def _query(url: str, sql: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    except sa.exc.ProgrammingError:  # the consumer has not migrated the store yet
        return []
    finally:
        engine.dispose()


def _tagged(url: str) -> set[str]:
    return {row[0] for row in _query(url, "select distinct asset_id from tags")}


def _etag(url: str, asset_id: str) -> str | None:
    rows = _query(url, "select etag from assets where asset_id = :a", a=asset_id)
    return rows[0][0] if rows else None


def _events(consumer: ConsumerProcess, outcome: str) -> float:
    _, text = consumer.get("/metrics")
    found = re.search(rf'^tagfleet_events_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


def _waiting(consumer: ConsumerProcess, predicate: Any, timeout_s: float, what: str) -> None:
    """``wait_until``, with the consumer's event counts and log tail in the failure."""
    try:
        wait_until(predicate, timeout_s, 0.5, what)
    except AssertionError as exc:
        _, text = consumer.get("/metrics")
        counts = re.findall(r"^tagfleet_events_total\{.*$", text, re.M)
        raise AssertionError(f"{exc}\n{counts}\n{consumer.logs()[-4000:]}") from None


def _noise_png(seed: int) -> bytes:
    """A PNG over 5 MiB (random pixels do not compress): enough for two multipart parts."""
    pixels = np.random.default_rng(seed).integers(0, 256, (1400, 1300, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _multipart(s3: Any, bucket: str, key: str, body: bytes) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    cut = 5 * 1024 * 1024
    for number, chunk in ((1, body[:cut]), (2, body[cut:])):
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )


def test_uploads_to_the_gateway_tag_themselves(
    stack: dict[str, str],
    kafka_bootstrap: str,
    new_topic: Any,
    gateway: PrivateGateway,
    pg_url: str,
    fleet_path: Path,
    tmp_path: Path,
) -> None:
    """200 PUTs (single-part and multipart, awkward keys) give 200 tagged assets and 200
    result events; a CopyObject tags the copy; an overwrite re-tags with the new ETag; a
    DELETE removes the tags and publishes the removal. No event is written by the test."""
    s3, bucket = gateway.client, "uploads"
    s3.create_bucket(Bucket=bucket)
    results, dlq = new_topic(partitions=2), new_topic(partitions=1)
    consumer = _consumer(
        tmp_path,
        stack,
        gateway,
        bootstrap_servers=kafka_bootstrap,
        topic=gateway.topic,
        group_id=f"g-{results}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
    )
    try:
        keys = [KEY_FORMS[i % len(KEY_FORMS)].format(i=i) for i in range(200)]
        for i, key in enumerate(keys):
            if i < MULTIPART:
                _multipart(s3, bucket, key, _noise_png(i))
            else:
                s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(i))
        uris = {f"s3://{bucket}/{k}" for k in keys}
        wait_until(lambda: _tagged(pg_url) >= uris, 300, 1.0, "200 assets tagged")
        assert _tagged(pg_url) == uris
        first = read_topic(kafka_bootstrap, results, expected=200)
        assert sorted(r.key.decode() for r in first) == sorted(uris)

        copy = "copy/summer é+1 (copy) & more?.png"
        s3.copy_object(Bucket=bucket, Key=copy, CopySource={"Bucket": bucket, "Key": keys[5]})
        copied = f"s3://{bucket}/{copy}"
        wait_until(lambda: copied in _tagged(pg_url), 120, 0.5, "the copy tagged")

        overwritten = f"s3://{bucket}/{keys[6]}"
        old_etag = _etag(pg_url, overwritten)
        put = s3.put_object(Bucket=bucket, Key=keys[6], Body=image_bytes(1000, size=(120, 90)))
        new_etag = put["ETag"].strip('"')
        assert new_etag != old_etag
        wait_until(lambda: _etag(pg_url, overwritten) == new_etag, 120, 0.5, "re-tagged")
        assert overwritten in _tagged(pg_url)

        deleted = f"s3://{bucket}/{keys[7]}"
        s3.delete_object(Bucket=bucket, Key=keys[7])
        wait_until(lambda: deleted not in _tagged(pg_url), 120, 0.5, "tags removed")

        records = read_topic(kafka_bootstrap, results, expected=203)
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    # keyed by asset id: each asset's events are on one partition, in order
    by_asset = {json.loads(r.value)["asset_id"]: json.loads(r.value) for r in records}
    per_asset = Counter(r.key.decode() for r in records)
    assert per_asset == Counter({**dict.fromkeys(uris, 1), copied: 1, overwritten: 2, deleted: 2})
    assert by_asset[overwritten]["etag"] == new_etag
    assert by_asset[deleted]["removed"] is True
    assert by_asset[copied]["functions"]["shape"]["type"] == "classify"
    assert read_topic(kafka_bootstrap, dlq, expected=0, timeout_s=5) == []


def _gateway_records(bootstrap: str, gw: PrivateGateway, bucket: str, count: int) -> list[Any]:
    """The gateway's notification records of ``bucket`` (``count`` of them), oldest first."""

    def of_bucket() -> list[Any]:
        found = []
        for record in read_topic(bootstrap, gw.topic, expected=0, timeout_s=2):
            for rec in json.loads(record.value).get("Records", []):
                if rec["s3"]["bucket"]["name"] == bucket:
                    found.append((int(rec["s3"]["object"]["sequencer"], 16), record))
        return found if len(found) >= count else []

    found = wait_until(of_bucket, 60, 0.5, f"{count} gateway records of {bucket}")
    return [record for _, record in sorted(found, key=lambda pair: pair[0])]


def _place(bootstrap: str, topic: str, placed: list[tuple[Any, int]]) -> None:
    """Produce each record's value, unchanged and with no key (as the gateway does), onto the
    partition given."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for record, partition in placed:
        producer.send(topic, value=record.value, partition=partition)
    producer.flush(30)
    producer.close()


def test_events_delivered_in_reverse_end_with_the_newest(
    stack: dict[str, str],
    kafka_bootstrap: str,
    new_topic: Any,
    gateway: PrivateGateway,
    pg_url: str,
    fleet_path: Path,
    tmp_path: Path,
) -> None:
    """A Delete delivered before the Put it followed, and two overwrites delivered in reverse,
    each pair on two partitions: the store ends with the newest event's state, the older
    events are counted stale (not dead-lettered) and publish nothing. A Put handled while the
    Delete that followed it is still on its way (its object is already gone) is stale too once
    that Delete is applied, not a dead letter."""
    s3, bucket = gateway.client, "order"
    s3.create_bucket(Bucket=bucket)
    over, gone = "x/over+write é #1.png", "y/put then delete & more?.png"
    s3.put_object(Bucket=bucket, Key=over, Body=image_bytes(1))
    newest = s3.put_object(Bucket=bucket, Key=over, Body=image_bytes(2))["ETag"].strip('"')
    s3.put_object(Bucket=bucket, Key=gone, Body=image_bytes(3))
    s3.delete_object(Bucket=bucket, Key=gone)
    late = "z/late delete+1.png"
    s3.put_object(Bucket=bucket, Key=late, Body=image_bytes(4))
    s3.delete_object(Bucket=bucket, Key=late)
    put1, put2, put_gone, delete_gone, put_late, delete_late = _gateway_records(
        kafka_bootstrap, gateway, bucket, 6
    )

    topic = new_topic(partitions=2)
    results, dlq = new_topic(partitions=1), new_topic(partitions=1)
    _place(kafka_bootstrap, topic, [(delete_gone, 0), (put2, 1)])  # the newer ones first
    consumer = _consumer(
        tmp_path,
        stack,
        gateway,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
    )
    over_id, gone_id = f"s3://{bucket}/{over}", f"s3://{bucket}/{gone}"
    try:
        _waiting(consumer, lambda: _etag(pg_url, over_id) == newest, 120, "the overwrite stored")
        recorded = "select 1 from assets where asset_id = :a and removed"
        _waiting(consumer, lambda: _query(pg_url, recorded, a=gone_id), 60, "the delete recorded")
        _place(kafka_bootstrap, topic, [(put_gone, 1), (put1, 0)])  # then the older ones
        _waiting(consumer, lambda: _events(consumer, "stale") == 2.0, 120, "2 stale events")
        # the Put first, its object already gone; the Delete once the Put is seen waiting
        _place(kafka_bootstrap, topic, [(put_late, 0)])
        _waiting(consumer, lambda: "waiting for its removal" in consumer.logs(), 60, "put waits")
        _place(kafka_bootstrap, topic, [(delete_late, 1)])
        _waiting(consumer, lambda: _events(consumer, "stale") == 3.0, 120, "3 stale events")
        # the Delete was waiting behind its Put in the key gate: it is applied after it
        _waiting(consumer, lambda: _events(consumer, "removed") == 2.0, 60, "2 removals")
        removed = _events(consumer, "removed")
        stored = _events(consumer, "stored")
        dead = _events(consumer, "dead_lettered")
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    assert (stored, removed, dead) == (1.0, 2.0, 0.0)
    assert _etag(pg_url, over_id) == newest and over_id in _tagged(pg_url)
    assert gone_id not in _tagged(pg_url)
    late_id = f"s3://{bucket}/{late}"
    events = [json.loads(r.value) for r in read_topic(kafka_bootstrap, results, expected=3)]
    assert sorted((e["asset_id"], e.get("etag"), e.get("removed")) for e in events) == sorted(
        [(over_id, newest, None), (gone_id, None, True), (late_id, None, True)]
    )
    assert read_topic(kafka_bootstrap, dlq, expected=0, timeout_s=5) == []


def _records_of(
    bootstrap: str, gw: PrivateGateway, bucket: str, key: str, count: int
) -> dict[str, Any]:
    """The gateway's ``count`` records of one object, by event name."""

    def found() -> dict[str, Any]:
        named = {}
        for record in read_topic(bootstrap, gw.topic, expected=0, timeout_s=2):
            for rec in json.loads(record.value).get("Records", []):
                if rec["s3"]["bucket"]["name"] == bucket and rec["s3"]["object"]["key"] == key:
                    named[rec["eventName"]] = (rec, record)
        return named if len(named) >= count else {}

    result: dict[str, Any] = wait_until(found, 60, 0.5, f"{count} gateway records of {bucket}")
    return result


def test_a_delete_after_a_gateway_restart_is_newer_than_the_put_before_it(
    stack: dict[str, str],
    kafka_bootstrap: str,
    new_topic: Any,
    gateway: PrivateGateway,
    pg_url: str,
    fleet_path: Path,
    tmp_path: Path,
) -> None:
    """VersityGW's sequencer is a counter of its process: after a restart the Delete of an
    object carries a smaller one than the Put before the restart. Delivered first, that
    Delete still wins: the order key puts the event's second before the counter."""
    s3, bucket, key = gateway.client, "restart", "r/before and after+1.png"
    s3.create_bucket(Bucket=bucket)
    for i in range(3):  # other events first, so that the Put's counter is past 1
        s3.put_object(Bucket=bucket, Key=f"other/{i}.png", Body=image_bytes(i))
    s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(5))
    put_second = int(time.time())
    gateway.restart()
    wait_until(lambda: time.time() >= put_second + 1, 5, 0.1, "the next second")
    s3.delete_object(Bucket=bucket, Key=key)
    named = _records_of(kafka_bootstrap, gateway, bucket, key, 2)
    (put_rec, put), (delete_rec, delete) = (
        named["s3:ObjectCreated:Put"],
        named["s3:ObjectRemoved:Delete"],
    )
    # the trap: compared alone, the counters say the Delete came first
    put_seq, delete_seq = (int(r["s3"]["object"]["sequencer"], 16) for r in (put_rec, delete_rec))
    assert delete_seq < put_seq

    topic = new_topic(partitions=2)
    results, dlq = new_topic(partitions=1), new_topic(partitions=1)
    _place(kafka_bootstrap, topic, [(delete, 0), (put, 1)])
    consumer = _consumer(
        tmp_path,
        stack,
        gateway,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
    )
    asset = f"s3://{bucket}/{key}"
    try:
        _waiting(
            consumer,
            lambda: _events(consumer, "stale") + _events(consumer, "dead_lettered") >= 1,
            120,
            "the put handled",
        )
        _waiting(consumer, lambda: _events(consumer, "removed") == 1.0, 60, "the delete")
        counts = {o: _events(consumer, o) for o in ("stored", "removed", "stale", "dead_lettered")}
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    assert counts == {"stored": 0.0, "removed": 1.0, "stale": 1.0, "dead_lettered": 0.0}
    assert asset not in _tagged(pg_url)
    assert read_topic(kafka_bootstrap, dlq, expected=0, timeout_s=5) == []
