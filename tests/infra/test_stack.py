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


# VersityGW: an S3 gateway that publishes its own bucket notifications to Kafka
# (infra/versitygw.sh). moto stays the stack's default S3 endpoint (AWS_ENDPOINT_URL_S3); these
# tests talk to the gateway through TAGFLEET_GW_ENDPOINT, or to a private gateway of their own.

GW_HEALTH_PATH = "/_tagfleet_health"
GW_SCRIPT = REPO_ROOT / "infra" / "versitygw.sh"
GW_EVENT_TIMEOUT_S = 10
FIXTURES = REPO_ROOT / "tests" / "consumers" / "fixtures"
# TAGFLEET_RECORD_FIXTURES=1 rewrites tests/consumers/fixtures/versitygw/*.json from a fresh
# private gateway instead of comparing against them.
RECORD_FIXTURES = os.environ.get("TAGFLEET_RECORD_FIXTURES") == "1"

# (fixture file, key, body): the PUTs of the recorded scenario, keys with every character the
# consumer must resolve (space, '+', '%', a literal '%20', '#', '&', '?', non-ASCII).
GW_PUTS = (
    ("put-space-plus-accent.json", "a/summer 2024 été+1.jpg", b"\xff\xd8 first summer bytes"),
    ("put-percent-hash-amp-query.json", "b/100% off #1 & more?.jpg", b"\xff\xd8 percent bytes"),
    ("put-cjk-literal-percent20.json", "c/日本 ü %20+x.png", b"\x89PNG literal %20 bytes"),
)
GW_MULTIPART_KEY = "mp/multi part é+1 #2.jpg"
GW_COPY_KEY = "copy/summer 2024 été+1 (copy) & more?.jpg"
GW_OVERWRITE_BODY = b"\xff\xd8 second summer bytes, longer"


def _gateway_healthy(endpoint: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}{GW_HEALTH_PATH}", timeout=3) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def _gw_client(endpoint: str, access: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


@pytest.fixture(scope="session")
def gateway(stack: dict[str, str]) -> dict[str, str]:
    """The stack's environment with the stack's gateway answering: `infra/stack.sh up` treats
    the gateway as optional, so it is started here when it is down, and its failure is this
    fixture's error."""
    import subprocess

    if not _gateway_healthy(stack["TAGFLEET_GW_ENDPOINT"]):
        result = subprocess.run(
            [str(REPO_ROOT / "infra" / "stack.sh"), "start", "versitygw"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if not _gateway_healthy(stack["TAGFLEET_GW_ENDPOINT"]):
            raise RuntimeError(
                f"VersityGW does not answer on {stack['TAGFLEET_GW_ENDPOINT']}; "
                f"'infra/stack.sh start versitygw' exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
    return stack


@pytest.fixture
def gw_bucket(gateway: dict[str, str]) -> Any:
    """(client, bucket): a boto3 client on the stack's gateway and a fresh bucket there,
    emptied and deleted after the test."""
    client = _gw_client(
        gateway["TAGFLEET_GW_ENDPOINT"],
        gateway["TAGFLEET_GW_ACCESS_KEY"],
        gateway["TAGFLEET_GW_SECRET_KEY"],
    )
    bucket = f"gw-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    try:
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # cleanup must not mask the outcome of the test
        print(f"gw_bucket: could not delete {bucket}: {exc!r}")


class PrivateGateway:
    """A gateway of the test's own (infra/versitygw.sh with its own state directory, port and
    events topic), so that what it publishes from its start-up on can be read in full."""

    def __init__(self, stack: dict[str, str], state_dir: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.topic = f"gw-events-{uuid.uuid4().hex[:12]}"
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "TAGFLEET_STACK_DIR": str(state_dir),
            "TAGFLEET_GW_PORT": str(port),
            "TAGFLEET_GW_EVENTS_TOPIC": self.topic,
            "TAGFLEET_GW_ACCESS_KEY": stack["TAGFLEET_GW_ACCESS_KEY"],
            "TAGFLEET_GW_SECRET_KEY": stack["TAGFLEET_GW_SECRET_KEY"],
        }
        self.client = _gw_client(
            self.endpoint, stack["TAGFLEET_GW_ACCESS_KEY"], stack["TAGFLEET_GW_SECRET_KEY"]
        )

    def run(self, command: str) -> None:
        import subprocess

        result = subprocess.run(
            [str(GW_SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"infra/versitygw.sh {command} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )


@pytest.fixture
def private_gateway(stack: dict[str, str], kafka_admin: Any) -> Any:
    import shutil

    # beside the stack's own state, on a filesystem known to hold the posix backend's xattrs
    # (tmp_path may be a tmpfs without user xattrs)
    stack_dir = Path(os.environ.get("TAGFLEET_STACK_DIR", REPO_ROOT / "var" / "stack"))
    state = stack_dir / "versitygw-tests" / uuid.uuid4().hex[:12]
    gw = PrivateGateway(stack, state)
    gw.run("start")
    try:
        yield gw
    finally:
        gw.run("stop")
        shutil.rmtree(state, ignore_errors=True)
        try:
            kafka_admin.delete_topics([gw.topic], timeout_ms=30_000, raise_errors=False)
        except Exception as exc:  # cleanup must not mask the outcome of the test
            print(f"private_gateway: could not delete {gw.topic}: {exc!r}")


def end_offsets(bootstrap: str, topic: str) -> dict[Any, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return dict(consumer.end_offsets([TopicPartition(topic, p) for p in partitions]))
    finally:
        consumer.close(autocommit=False)


def read_until(
    bootstrap: str,
    topic: str,
    done: Any,
    timeout_s: float = GW_EVENT_TIMEOUT_S,
    start: dict[Any, int] | None = None,
) -> list[Any]:
    """Every record of `topic` (all partitions, from `start` or the beginning) read until
    `done(records)` is true; raises when it is still false after `timeout_s`."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    records: list[Any] = []
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        for tp in partitions:
            if start is not None and tp in start:
                consumer.seek(tp, start[tp])
            else:
                consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout_s
        while not done(records):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"after {timeout_s}s, {len(records)} records on {topic}: "
                    + "\n".join(r.value.decode(errors="replace") for r in records)
                )
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def _json(record: Any) -> Any:
    import json

    return json.loads(record.value)


def _object_records(records: list[Any], bucket: str | None = None) -> list[Any]:
    """The notification records (not the TestEvents), of `bucket` when given."""
    found = []
    for record in records:
        value = _json(record)
        for rec in value.get("Records", []):
            if bucket is None or rec["s3"]["bucket"]["name"] == bucket:
                found.append(record)
                break
    return found


def _test_events(records: list[Any]) -> list[Any]:
    return [r for r in records if _json(r).get("Event") == "s3:TestEvent"]


def test_gateway_put_publishes_object_created_put(gw_bucket: Any, gateway: dict[str, str]) -> None:
    client, bucket = gw_bucket
    bootstrap, topic = gateway["TAGFLEET_BOOTSTRAP_SERVERS"], gateway["TAGFLEET_GW_EVENTS_TOPIC"]
    start = end_offsets(bootstrap, topic)
    key = "photos/summer 2024 été+1.jpg"

    put_at = time.monotonic()
    body = b"\xff\xd8jpeg"
    etag = client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]
    records = read_until(bootstrap, topic, lambda rs: _object_records(rs, bucket), start=start)
    latency = time.monotonic() - put_at

    (record,) = _object_records(records, bucket)
    (rec,) = _json(record)["Records"]
    assert rec["eventName"] == "s3:ObjectCreated:Put"
    assert rec["s3"]["object"]["key"] == key  # raw: not "photos/summer+2024+%C3%A9t%C3%A9%2B1.jpg"
    assert rec["s3"]["object"]["size"] == len(body)
    assert rec["s3"]["object"]["eTag"] == etag  # quoted, as in the S3 response
    assert int(rec["s3"]["object"]["sequencer"], 16) > 0
    assert not record.key  # no Kafka key: records of one object may land on any partition
    assert latency < GW_EVENT_TIMEOUT_S


def test_gateway_sends_a_test_event_at_each_start_and_its_sequencer_restarts(
    private_gateway: PrivateGateway, kafka_bootstrap: str
) -> None:
    gw = private_gateway
    gw.client.create_bucket(Bucket="photos")
    gw.client.put_object(Bucket="photos", Key="one.jpg", Body=b"1")
    first = read_until(kafka_bootstrap, gw.topic, lambda rs: len(rs) >= 2)

    gw.run("restart")
    gw.client.put_object(Bucket="photos", Key="two.jpg", Body=b"2")
    records = read_until(kafka_bootstrap, gw.topic, lambda rs: len(rs) >= 4)

    assert len(_test_events(first)) == 1
    test_events = _test_events(records)
    assert len(test_events) == 2  # one per start, before any object record
    for event in test_events:
        assert set(_json(event)) == {"Service", "Event", "Time", "Bucket"}
        assert _json(event)["Bucket"] == "Test-Bucket"
        assert not event.key
    sequencers = {
        _json(r)["Records"][0]["s3"]["object"]["key"]: _json(r)["Records"][0]["s3"]["object"][
            "sequencer"
        ]
        for r in _object_records(records)
    }
    # a counter of the gateway process, in hex: it starts again at 1 after a restart, so a
    # sequencer orders events of one gateway run only
    assert sequencers == {"one.jpg": "1", "two.jpg": "1"}


def test_gateway_notification_formats_match_recorded_fixtures(
    private_gateway: PrivateGateway, kafka_bootstrap: str
) -> None:
    """PUTs of awkward keys, a multipart upload, a CopyObject, an overwrite and a DELETE on a
    fresh gateway: the records match tests/consumers/fixtures/versitygw/ byte for byte but for
    the times (TAGFLEET_RECORD_FIXTURES=1 records them anew)."""
    import json

    gw, bucket = private_gateway, "photos"
    s3 = gw.client
    s3.create_bucket(Bucket=bucket)
    expected: list[tuple[str, str, str]] = []  # (fixture file, eventName, raw key)
    for name, key, body in GW_PUTS:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        expected.append((name, "s3:ObjectCreated:Put", key))
    upload = s3.create_multipart_upload(Bucket=bucket, Key=GW_MULTIPART_KEY)["UploadId"]
    parts = []
    for number, body in ((1, b"\xff\xd8" + b"m" * (5 * 1024 * 1024)), (2, b"tail")):
        etag = s3.upload_part(
            Bucket=bucket, Key=GW_MULTIPART_KEY, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=GW_MULTIPART_KEY, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    expected.append(
        ("multipart.json", "s3:ObjectCreated:CompleteMultipartUpload", GW_MULTIPART_KEY)
    )
    summer = GW_PUTS[0][1]
    s3.copy_object(Bucket=bucket, Key=GW_COPY_KEY, CopySource={"Bucket": bucket, "Key": summer})
    expected.append(("copy.json", "s3:ObjectCreated:Copy", GW_COPY_KEY))
    s3.put_object(Bucket=bucket, Key=summer, Body=GW_OVERWRITE_BODY)
    expected.append(("overwrite.json", "s3:ObjectCreated:Put", summer))
    s3.delete_object(Bucket=bucket, Key=summer)
    expected.append(("delete.json", "s3:ObjectRemoved:Delete", summer))

    records = read_until(
        kafka_bootstrap, gw.topic, lambda rs: len(_object_records(rs)) >= len(expected)
    )
    (test_event,) = _test_events(records)
    objects = sorted(
        _object_records(records),
        key=lambda r: int(_json(r)["Records"][0]["s3"]["object"]["sequencer"], 16),
    )
    assert len(objects) == len(expected)

    for record, (_, event_name, key) in zip(objects, expected, strict=True):
        (rec,) = _json(record)["Records"]
        assert rec["eventName"] == event_name
        assert rec["s3"]["bucket"]["name"] == bucket
        # the raw key, not AWS's or MinIO's URL-encoded form
        assert rec["s3"]["object"]["key"] == key
        assert not record.key
    # every record has a sequencer: hex of a per-process counter, one per event in order
    assert [_json(r)["Records"][0]["s3"]["object"]["sequencer"] for r in objects] == [
        format(i, "X") for i in range(1, len(expected) + 1)
    ]

    folder = FIXTURES / "versitygw"
    recorded = [("test-event.json", test_event)] + [
        (name, record) for record, (name, _, _) in zip(objects, expected, strict=True)
    ]
    if RECORD_FIXTURES:
        folder.mkdir(parents=True, exist_ok=True)
        for name, record in recorded:
            (folder / name).write_bytes(record.value)
        return

    def timeless(value: Any) -> Any:
        if "Records" not in value:
            return {**value, "Time": "-"}
        return {"Records": [{**r, "eventTime": "-"} for r in value["Records"]]}

    for name, record in recorded:
        fixture = json.loads((folder / name).read_bytes())
        assert timeless(_json(record)) == timeless(fixture), name


def test_notification_fixtures_name_the_same_objects() -> None:
    """tests/consumers/fixtures/cases.json: each case's AWS, MinIO and VersityGW records name
    one object. AWS and MinIO URL-encode the key (form encoding: a space as '+', '+' as '%2B';
    MinIO also '/' as '%2F'); VersityGW sends it raw, so decoding it as AWS's form is wrong."""
    import json
    from urllib.parse import unquote_plus

    cases = json.loads((FIXTURES / "cases.json").read_text())
    bucket = cases["bucket"]
    misread = set()  # cases whose raw key, decoded as AWS's form, names another object
    for case in cases["cases"]:
        key = case["key"]
        records = {
            source: json.loads((FIXTURES / case[source]).read_bytes())["Records"]
            for source in ("aws", "minio", "versitygw")
        }
        for source, (rec,) in records.items():
            assert rec["s3"]["bucket"]["name"] == bucket, (source, case["file"])
            assert rec["eventName"].removeprefix("s3:") == case["event"], (source, case["file"])
        assert unquote_plus(records["aws"][0]["s3"]["object"]["key"]) == key
        assert unquote_plus(records["minio"][0]["s3"]["object"]["key"]) == key
        assert records["versitygw"][0]["s3"]["object"]["key"] == key
        minio = json.loads((FIXTURES / case["minio"]).read_bytes())
        assert minio["Key"] == f"{bucket}/{key}"  # MinIO's top-level Key: bucket/raw key
        if unquote_plus(key) != key:
            misread.add(case["file"])
    assert misread == {c["file"] for c in cases["cases"] if "+" in c["key"]}
    for source, path in cases["test_events"].items():
        assert json.loads((FIXTURES / path).read_bytes())["Event"] == "s3:TestEvent", source
