"""The service end to end on the real stack: Kafka 4 broker, moto's S3 server, PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    group_lag,
    image_bytes,
    mixed_events,
    native_event,
    produce,
    read_topic,
    upload_images,
    wait_until,
)

pytestmark = pytest.mark.integration


def _store_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counts = {
            "assets": conn.execute(sa.text("select count(*) from assets")).scalar_one(),
            "results": conn.execute(sa.text("select count(*) from function_results")).scalar_one(),
            "dup_results": conn.execute(
                sa.text(
                    "select count(*) from (select asset_id, function from function_results"
                    " group by asset_id, function having count(*) > 1) d"
                )
            ).scalar_one(),
        }
    engine.dispose()
    return counts


def test_500_mixed_events_all_stored_once_and_lag_zero(
    stack, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, fleet_path, tmp_path
):
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 500)
    topic, results, dlq = new_topic(partitions=4), new_topic(partitions=2), new_topic(partitions=1)
    produce(kafka_bootstrap, topic, mixed_events(bucket, keys))
    group = f"g-{topic}"
    port = free_port()
    consumer = ConsumerProcess(
        tmp_path / "consumer.log",
        env_for(stack),
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        metrics_port=port,
        batch_size=16,
    )
    try:
        wait_until(
            lambda: group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0,
            240,
            what="consumer group lag 0",
        )
        status, metrics = consumer.get("/metrics")
        assert status == 200
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]
    records = read_topic(kafka_bootstrap, results, expected=500)
    per_asset = Counter(r.key.decode() for r in records)
    expected = {f"s3://{bucket}/{k}" for k in keys}
    assert set(per_asset) == expected
    assert set(per_asset.values()) == {1}
    sample = json.loads(records[0].value)
    assert set(sample["functions"]) == {"shape", "colours"}
    assert sample["functions"]["shape"]["type"] == "classify"
    assert (sample["width"], sample["height"]) == (96, 72)
    counts = _store_counts(pg_url)
    assert counts == {"assets": 500, "results": 1000, "dup_results": 0}
    assert read_topic(kafka_bootstrap, dlq, expected=0, timeout_s=5) == []
    for name in (
        "tagfleet_events_total",
        "tagfleet_stage_seconds_bucket",
        "tagfleet_batch_size_bucket",
        "tagfleet_predictions_total",
        "tagfleet_prediction_score_bucket",
        "tagfleet_consumer_lag",
    ):
        assert name in metrics


def _start(
    tmp_path: Path,
    stack: dict[str, str],
    name: str,
    env: dict[str, str] | None = None,
    **flags: Any,
) -> ConsumerProcess:
    return ConsumerProcess(tmp_path / f"{name}.log", {**env_for(stack), **(env or {})}, **flags)


def _bad_inputs(
    s3: Any, bucket: str, other_bucket_missing: str
) -> list[tuple[str, tuple[bytes | None, bytes | None]]]:
    """One event per DLQ reason (plus zero-byte, truncated, non-image and bomb objects)."""
    import io

    from PIL import Image

    png = image_bytes(1)
    s3.put_object(Bucket=bucket, Key="bad/zero.png", Body=b"")
    s3.put_object(Bucket=bucket, Key="bad/truncated.png", Body=png[: len(png) // 2])
    s3.put_object(Bucket=bucket, Key="bad/text.png", Body=b"hello, I am not an image\n" * 10)
    s3.put_object(Bucket=bucket, Key="bad/huge.bin", Body=b"\0" * 300_000)
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")
    s3.put_object(Bucket=bucket, Key="bad/bomb.png", Body=bomb.getvalue())
    bad: list[tuple[str, tuple[bytes | None, bytes | None]]] = [
        ("invalid_json", (b"x", b"{oops")),
        ("invalid_event", (b"x", json.dumps({"uri": "s3://b/k"}).encode())),
        (
            "unsupported_uri",
            (b"a", json.dumps({"asset_id": "a", "uri": "file:///etc/passwd"}).encode()),
        ),
        (
            "unsupported_uri",
            (b"h", json.dumps({"asset_id": "h", "uri": "http://169.254.169.254/latest"}).encode()),
        ),
        ("bucket_not_allowed", native_event("not-allowed-bucket", "k.png")),
        ("unknown_function", native_event(bucket, "plain/0.png", functions=["nope"])),
        ("object_not_found", native_event(bucket, "missing/nothing.png")),
        ("object_not_found", native_event(other_bucket_missing, "k.png")),
        ("object_too_large", native_event(bucket, "bad/huge.bin")),
        ("empty_object", native_event(bucket, "bad/zero.png")),
        ("image_decode_failed", native_event(bucket, "bad/truncated.png")),
        ("unsupported_format", native_event(bucket, "bad/text.png")),
        ("image_too_large", native_event(bucket, "bad/bomb.png")),
    ]
    return bad


def test_every_bad_input_is_dead_lettered_once_and_good_ones_are_tagged(
    stack, kafka_bootstrap, kafka_admin, new_topic, new_bucket, s3, pg_url, fleet_path, tmp_path
):
    bucket = new_bucket()
    missing_bucket = f"{bucket}-missing"
    keys = upload_images(s3, bucket, 40)
    bad = _bad_inputs(s3, bucket, missing_bucket)
    good = mixed_events(bucket, keys)
    messages = []
    for i, event in enumerate(good):
        messages.append(event)
        if i % 3 == 0 and bad:
            messages.append(bad.pop(0)[1])
    expected_reasons = Counter(reason for reason, _ in _bad_inputs(s3, bucket, missing_bucket))
    topic, results, dlq = new_topic(partitions=3), new_topic(partitions=1), new_topic(partitions=1)
    produce(kafka_bootstrap, topic, messages + [m for _, m in bad])
    group = f"g-{topic}"
    consumer = _start(
        tmp_path,
        stack,
        "bad",
        env={"TAGFLEET_DLQ_REVEAL_MISSING": "true"},  # object_not_found, not object_unavailable
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet_path,
        metrics_port=free_port(),
        allowed_buckets=f"{bucket},{missing_bucket}",
        max_object_bytes=200_000,
        max_pixels=50_000_000,
    )
    try:
        wait_until(
            lambda: group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0, 240, what="lag 0"
        )
        assert consumer.alive(), consumer.logs()[-3000:]
    finally:
        assert consumer.terminate() == 0, consumer.logs()[-3000:]
    dead = read_topic(kafka_bootstrap, dlq, expected=sum(expected_reasons.values()))
    reasons = Counter(dict(r.headers)["tagfleet-reason"].decode() for r in dead)
    assert reasons == expected_reasons
    for record in dead:
        headers = dict(record.headers)
        assert headers["tagfleet-source-topic"].decode() == topic
        assert int(headers["tagfleet-source-offset"].decode()) >= 0
        assert headers["tagfleet-message"]
    originals = {value for _, (_, value) in _bad_inputs(s3, bucket, missing_bucket)}
    assert {r.value for r in dead} <= originals
    tagged = read_topic(kafka_bootstrap, results, expected=len(keys))
    assert Counter(r.key.decode() for r in tagged) == Counter(f"s3://{bucket}/{k}" for k in keys)


GOOD_UNDER_POLICY = 6


@pytest.fixture
def policed_s3(tmp_path: Path) -> Any:
    """A second moto server that enforces IAM, with a bucket of images and a reader whose
    policy denies ``denied/*``: GetObject answers a real 403 there, and 200 elsewhere."""
    import os
    import subprocess
    import sys

    import boto3

    port = free_port()
    setup_calls = 1 + GOOD_UNDER_POLICY + 1 + 3
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(setup_calls))
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    admin = dict(
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        wait_until(lambda: _port_open(port), 30, 0.1, what="moto with IAM")
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket="policed")
        for i in range(GOOD_UNDER_POLICY):
            s3.put_object(Bucket="policed", Key=f"ok/{i}.png", Body=image_bytes(i))
        s3.put_object(Bucket="policed", Key="denied/secret.png", Body=image_bytes(99))
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="tagfleet")
        key = iam.create_access_key(UserName="tagfleet")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": ["arn:aws:s3:::policed", "arn:aws:s3:::policed/*"],
                },
                {
                    "Effect": "Deny",
                    "Action": "s3:GetObject",
                    "Resource": "arn:aws:s3:::policed/denied/*",
                },
            ],
        }
        iam.put_user_policy(
            UserName="tagfleet", PolicyName="read", PolicyDocument=json.dumps(policy)
        )
        yield {
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        server.terminate()
        server.wait(10)


def _port_open(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def test_access_denied_is_dead_lettered_and_the_rest_tagged(
    stack, kafka_bootstrap, kafka_admin, new_topic, policed_s3, sqlite_url, fleet_path, tmp_path
):
    """A forbidden and a missing object end in the DLQ alike (``object_unavailable``, the same
    message): whoever reads the DLQ cannot tell which objects exist."""
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    good = [native_event("policed", f"ok/{i}.png") for i in range(GOOD_UNDER_POLICY)]
    denied, missing = (
        native_event("policed", "denied/secret.png"),
        native_event("policed", "ok/no.png"),
    )
    produce(kafka_bootstrap, topic, good[:3] + [denied, missing] + good[3:])
    group = f"g-{topic}"
    consumer = ConsumerProcess(
        tmp_path / "denied.log",
        {**env_for(stack), **policed_s3},
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=sqlite_url,
        fleet=fleet_path,
        metrics_port=0,
    )
    try:
        wait_until(
            lambda: group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0, 180, what="lag 0"
        )
    finally:
        assert consumer.terminate() == 0, consumer.logs()[-3000:]
    dead = read_topic(kafka_bootstrap, dlq, expected=2)
    headers = {dict(r.headers)["tagfleet-asset-id"]: dict(r.headers) for r in dead}
    assert set(headers) == {b"s3://policed/denied/secret.png", b"s3://policed/ok/no.png"}
    assert {h["tagfleet-reason"] for h in headers.values()} == {b"object_unavailable"}
    assert len({h["tagfleet-message"] for h in headers.values()}) == 1
    assert b"AccessDenied" in (tmp_path / "denied.log").read_bytes()  # the operator's log knows
    tagged = read_topic(kafka_bootstrap, results, expected=GOOD_UNDER_POLICY)
    assert sorted(r.key.decode() for r in tagged) == sorted(k.decode() for k, _ in good)
