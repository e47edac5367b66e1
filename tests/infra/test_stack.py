"""The local stack is made of real services: a Kafka 4.x broker, moto's S3 server, PostgreSQL.

Each test talks to one service over a real connection, through the clients tagfleet uses
(kafka-python, boto3, SQLAlchemy with psycopg).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUND_TRIP_TIMEOUT_S = 30
AUTH_FAILED = "Authentication failed: Invalid username or password"


def consume_one(topic: str, **config: Any) -> Any:
    """The first record of `topic`, read from the earliest offset by a fresh consumer group."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config,
    )
    try:
        deadline = time.monotonic() + ROUND_TRIP_TIMEOUT_S
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                if records:
                    return records[0]
        raise AssertionError(f"no record from {topic} within {ROUND_TRIP_TIMEOUT_S}s")
    finally:
        consumer.close(autocommit=False)


def test_broker_is_kafka_4(kafka_admin: Any, kafka_bootstrap: str) -> None:
    from kafka.protocol.api_key import ApiKey

    data = kafka_admin.get_broker_version_data(1)
    assert data.broker_version >= (4, 0), data.broker_version_str
    versions = kafka_admin.api_versions()
    fetch_min, fetch_max = versions[ApiKey.Fetch]
    # Kafka 4.0 removed Fetch v0-v3 (KIP-896); a 3.x broker still serves v0.
    assert fetch_min >= 4
    assert fetch_max >= 17


def test_produce_consume_round_trip(kafka_bootstrap: str, new_topic: Any) -> None:
    from kafka import KafkaProducer

    topic = new_topic(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topic, key=b"asset-1", value=b'{"asset_id": "asset-1"}').get(timeout=30)
    finally:
        producer.close()

    record = consume_one(topic, bootstrap_servers=kafka_bootstrap)

    assert (record.key, record.value) == (b"asset-1", b'{"asset_id": "asset-1"}')
    assert record.offset == 0


def test_new_topic_has_requested_partitions(kafka_admin: Any, new_topic: Any) -> None:
    topic = new_topic(partitions=3)

    (described,) = kafka_admin.describe_topics([topic])

    assert len(described["partitions"]) == 3
    assert all(p["leader_id"] == 1 for p in described["partitions"])


def test_auto_created_topic_gets_four_partitions(kafka_bootstrap: str) -> None:
    from kafka import KafkaProducer

    topic = f"auto-{uuid.uuid4().hex[:12]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        producer.send(topic, b"x").get(timeout=30)
        assert producer.partitions_for(topic) == {0, 1, 2, 3}
    finally:
        producer.close()


def round_trip(topic: str, value: bytes, **config: Any) -> Any:
    """Produces ``value`` to ``topic`` and reads it back, both with kafka-python ``config``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", **config)
    try:
        producer.send(topic, value=value).get(timeout=30)
    finally:
        producer.close()
    return consume_one(topic, **config)


def test_sasl_plain_round_trip(kafka_sasl_config: dict[str, Any], new_topic: Any) -> None:
    record = round_trip(new_topic(partitions=1), b"over sasl", **kafka_sasl_config)

    assert record.value == b"over sasl"


def test_sasl_wrong_password_is_rejected(kafka_sasl_config: dict[str, Any]) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    # The client sees either the auth error or the broker closing the connection right after
    # it, whichever it reads first; the broker's own log says which it was.
    broker_log = Path(os.environ.get("TAGFLEET_STACK_DIR", REPO_ROOT / "var" / "stack"))
    broker_log = broker_log / "kafka" / "logs" / "server.log"
    assert broker_log.exists(), f"{broker_log} missing: was the broker started from this checkout?"
    failures_before = broker_log.read_text(errors="replace").count(AUTH_FAILED)

    config = {**kafka_sasl_config, "sasl_plain_password": "not-the-password"}
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_timeout_ms=3000, **config)

    assert broker_log.read_text(errors="replace").count(AUTH_FAILED) > failures_before


def test_ssl_mutual_tls_round_trip(kafka_ssl_config: dict[str, Any], new_topic: Any) -> None:
    record = round_trip(new_topic(partitions=1), b"over tls", **kafka_ssl_config)

    assert record.value == b"over tls"


def test_ssl_without_client_certificate_is_rejected(kafka_ssl_config: dict[str, Any]) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    config = {k: v for k, v in kafka_ssl_config.items() if k not in ("ssl_certfile", "ssl_keyfile")}
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_timeout_ms=3000, **config)


def test_s3_put_get_list(s3: Any, new_bucket: Any) -> None:
    bucket = new_bucket()
    s3.put_object(Bucket=bucket, Key="photos/cat 1.jpg", Body=b"\xff\xd8jpeg-bytes")

    body = s3.get_object(Bucket=bucket, Key="photos/cat 1.jpg")["Body"].read()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="photos/")

    assert body == b"\xff\xd8jpeg-bytes"
    assert [o["Key"] for o in listed["Contents"]] == ["photos/cat 1.jpg"]


def test_s3_missing_object_is_404(s3: Any, new_bucket: Any) -> None:
    from botocore.exceptions import ClientError

    bucket = new_bucket()
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="nope.jpg")

    assert info.value.response["Error"]["Code"] == "NoSuchKey"


def test_postgres_is_real(pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("select version()")).scalar_one()
            database = conn.execute(sa.text("select current_database()")).scalar_one()
            max_connections = int(conn.execute(sa.text("show max_connections")).scalar_one())
    finally:
        engine.dispose()

    assert version.startswith("PostgreSQL ")
    assert engine.dialect.driver == "psycopg"
    assert database == sa.engine.make_url(pg_url).database
    assert max_connections >= 200


def test_test_role_may_end_autovacuum_workers_when_dropping_a_database(pg_url: str) -> None:
    """pg_url's teardown drops its database WITH (FORCE). An autovacuum worker busy in it runs
    under no role, and only superusers or pg_signal_backend members may end it; without that
    grant the drop failed at random (CI, test_5_s3_unresponsive_30s)."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            may_signal = conn.execute(
                sa.text("select pg_has_role(current_user, 'pg_signal_backend', 'USAGE')")
            ).scalar_one()
            superuser = conn.execute(sa.text("show is_superuser")).scalar_one()
    finally:
        engine.dispose()

    assert superuser == "off"
    assert may_signal is True


def test_pg_url_databases_are_isolated(pg_url: str, stack: dict[str, str]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (x int)"))
    finally:
        engine.dispose()

    shared = sa.create_engine(stack["TAGFLEET_TEST_PG_URL"])
    try:
        with shared.connect() as conn:
            assert "t" not in sa.inspect(conn).get_table_names()
    finally:
        shared.dispose()


def test_sqlite_url_is_a_file(sqlite_url: str, tmp_path: Any) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table t (x int)"))
    engine.dispose()

    assert (tmp_path / "tags.db").exists()


def test_stack_control_stops_and_starts_postgres(stack_control: Any, pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    stack_control.stop("postgres")
    try:
        with pytest.raises(sa.exc.OperationalError), engine.connect():
            pass
    finally:
        stack_control.start("postgres")

    with engine.connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar_one() == 1
    engine.dispose()


def test_stack_control_pause_keeps_s3_state(stack_control: Any, s3: Any, new_bucket: Any) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    bucket = new_bucket()
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    impatient = boto3.client(
        "s3",
        endpoint_url=s3.meta.endpoint_url,
        config=Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}),
    )
    stack_control.pause("s3")
    try:
        with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
            impatient.get_object(Bucket=bucket, Key="k")
    finally:
        stack_control.resume("s3")

    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


@pytest.mark.slow
def test_kafka_restart_keeps_records(
    stack_control: Any, kafka_bootstrap: str, new_topic: Any
) -> None:
    from kafka import KafkaProducer

    topic = new_topic(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topic, value=b"before restart").get(timeout=30)
    finally:
        producer.close()

    stack_control.restart("kafka")

    assert consume_one(topic, bootstrap_servers=kafka_bootstrap).value == b"before restart"
