"""Fixtures shared by every test package: the local stack of real services.

The stack is `infra/stack.sh` (Kafka 4.x in KRaft mode, moto's S3 server, PostgreSQL). At
start-up the environment printed by `infra/stack.sh env` (bootstrap servers, the S3 endpoint,
fake AWS credentials, the PostgreSQL URL) is exported into this process, so code under test
that builds its own clients finds the stack and never a real cloud. The services themselves
start lazily: the first test that asks for one of them runs `infra/stack.sh up` when any is
unreachable, so a bare `pytest` works. Nothing here skips: a service that cannot start makes
the fixture error with the reason and the script's output.

Tests that use a stack fixture are marked `integration`, so `pytest -m "not integration"`
runs only what needs no service.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK_SCRIPT = REPO_ROOT / "infra" / "stack.sh"
STACK_SERVICES = ("kafka", "s3", "postgres")
# A cold `up` resolves Kafka's jars with Maven; give it time before calling it broken.
STACK_UP_TIMEOUT_S = 900

KAFKA_SASL_USERNAME = "tagfleet"
KAFKA_SASL_PASSWORD = "tagfleet-secret"

# Fixtures that need a running service; tests using any of them get the `integration` mark.
STACK_FIXTURES = frozenset(
    {
        "stack",
        "kafka_bootstrap",
        "kafka_sasl_config",
        "kafka_ssl_config",
        "kafka_admin",
        "new_topic",
        "s3",
        "new_bucket",
        "pg_url",
        "stack_control",
    }
)


def _run_stack(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK_SCRIPT), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_stack_env() -> dict[str, str]:
    """The `export NAME=value` lines of `infra/stack.sh env`, as a dict."""
    result = _run_stack("env", timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"infra/stack.sh env failed:\n{result.stderr}")
    pairs = re.findall(r"^export ([A-Z0-9_]+)=(.*)$", result.stdout, flags=re.MULTILINE)
    return dict(pairs)


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports code that builds boto3 or Kafka clients.
    os.environ.update(read_stack_env())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _tcp_open(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=3) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def _unreachable(env: dict[str, str]) -> list[str]:
    pg = urllib.parse.urlsplit(env["TAGFLEET_TEST_PG_URL"])
    checks = {
        "kafka": lambda: _tcp_open(env["TAGFLEET_BOOTSTRAP_SERVERS"].split(",")[0]),
        "s3": lambda: _http_ok(env["AWS_ENDPOINT_URL_S3"]),
        "postgres": lambda: _tcp_open(f"{pg.hostname}:{pg.port}"),
    }
    return [name for name, check in checks.items() if not check()]


def ensure_stack_up(env: dict[str, str]) -> None:
    """Starts the stack when any service is unreachable; raises with the reason when it fails."""
    if not _unreachable(env):
        return
    result = _run_stack("up", timeout=STACK_UP_TIMEOUT_S)
    still_down = _unreachable(env)
    if result.returncode != 0 or still_down:
        raise RuntimeError(
            f"the local stack is not reachable (down: {', '.join(still_down) or 'none'}); "
            f"'infra/stack.sh up' exited {result.returncode}. On a fresh machine run "
            f"'make setup' first.\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )


def unique_name(prefix: str) -> str:
    """A short unique name usable as a Kafka topic, S3 bucket or database name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    """The stack's environment (`infra/stack.sh env`), with every service up."""
    env = read_stack_env()
    ensure_stack_up(env)
    return env


# Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: dict[str, str]) -> str:
    """`host:port` of the broker's PLAINTEXT listener."""
    return stack["TAGFLEET_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def kafka_sasl_config(stack: dict[str, str]) -> dict[str, Any]:
    """kafka-python settings for the SASL_PLAINTEXT listener (mechanism PLAIN)."""
    return {
        "bootstrap_servers": stack["TAGFLEET_KAFKA_SASL_BOOTSTRAP"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": KAFKA_SASL_USERNAME,
        "sasl_plain_password": KAFKA_SASL_PASSWORD,
    }


@pytest.fixture(scope="session")
def kafka_ssl_config(stack: dict[str, str]) -> dict[str, Any]:
    """kafka-python settings for the SSL listener (mutual TLS: the stack's CA, the client
    certificate and key that `infra/kafka.sh` made in var/stack/kafka/tls/)."""
    bootstrap = stack["TAGFLEET_KAFKA_SSL_BOOTSTRAP"]
    if not (Path(stack["TAGFLEET_TEST_KAFKA_SSL_CAFILE"]).exists() and _tcp_open(bootstrap)):
        raise RuntimeError(
            f"the broker has no SSL listener on {bootstrap} (started by an older "
            "infra/kafka.sh?); run 'infra/stack.sh restart kafka'"
        )
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SSL",
        "ssl_cafile": stack["TAGFLEET_TEST_KAFKA_SSL_CAFILE"],
        "ssl_certfile": stack["TAGFLEET_TEST_KAFKA_SSL_CERTFILE"],
        "ssl_keyfile": stack["TAGFLEET_TEST_KAFKA_SSL_KEYFILE"],
    }


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[Any]:
    """A `kafka.KafkaAdminClient` on the PLAINTEXT listener, shared by the session."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tagfleet-tests")
    yield admin
    admin.close()


@pytest.fixture
def new_topic(kafka_admin: Any) -> Iterator[Callable[..., str]]:
    """Factory: `new_topic(partitions=4, prefix="t", configs=None) -> name`.

    Creates a uniquely named topic (replication 1) and returns once every partition has a
    leader. Topics are deleted after the test.
    """
    created: list[str] = []

    def make(partitions: int = 4, prefix: str = "t", configs: dict[str, str] | None = None) -> str:
        name = unique_name(prefix)
        kafka_admin.create_topics(
            {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": configs or {},
                }
            },
            timeout_ms=30_000,
            wait_for_metadata=True,
        )
        created.append(name)
        return name

    yield make
    if created:
        try:
            kafka_admin.delete_topics(created, timeout_ms=30_000, raise_errors=False)
        except Exception as exc:  # cleanup must not mask the outcome of the test
            print(f"new_topic: could not delete {created}: {exc!r}")


# S3


@pytest.fixture(scope="session")
def s3(stack: dict[str, str]) -> Any:
    """A boto3 S3 client pointed at moto's server."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=stack["AWS_ENDPOINT_URL_S3"],
        region_name=stack["AWS_DEFAULT_REGION"],
        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def new_bucket(s3: Any) -> Iterator[Callable[..., str]]:
    """Factory: `new_bucket(prefix="tf") -> name`; emptied and deleted after the test."""
    created: list[str] = []

    def make(prefix: str = "tf") -> str:
        name = unique_name(prefix)
        s3.create_bucket(Bucket=name)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=name, Key=obj["Key"])
            s3.delete_bucket(Bucket=name)
        except Exception as exc:  # cleanup must not mask the outcome of the test
            print(f"new_bucket: could not delete {name}: {exc!r}")


# Metadata store


@pytest.fixture
def pg_url(stack: dict[str, str]) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database (SQLAlchemy URL), dropped after the test."""
    import sqlalchemy as sa

    admin_url = stack["TAGFLEET_TEST_PG_URL"]
    name = unique_name("t").replace("-", "_")
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with engine.connect() as conn:
            # FORCE: a connection the test leaked must not keep its database alive.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLAlchemy URL of an SQLite file in the test's tmp_path."""
    return f"sqlite:///{tmp_path / 'tags.db'}"


# Faults


@dataclass
class StackControl:
    """Stops, starts, pauses and resumes single services of the local stack (fault tests).

    `stop`/`start`/`restart` run `infra/stack.sh` and raise on failure. `pause` freezes a
    service (SIGSTOP: its port stays open, requests hang) and `resume` thaws it. moto keeps
    buckets in memory only, so stopping `s3` loses them; pause it to keep them. After the
    test, every service this object touched is resumed and started again.
    """

    touched: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)

    def _call(self, command: str, name: str) -> None:
        if name not in STACK_SERVICES:
            raise ValueError(f"unknown service {name!r}; expected one of {STACK_SERVICES}")
        result = _run_stack(command, name, timeout=STACK_UP_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(
                f"infra/stack.sh {command} {name} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def stop(self, name: str) -> None:
        self.touched.add(name)
        if name in self.paused:
            self.resume(name)
        self._call("stop", name)

    def start(self, name: str) -> None:
        self._call("start", name)

    def restart(self, name: str) -> None:
        self.touched.add(name)
        self._call("restart", name)

    def pause(self, name: str) -> None:
        self.touched.add(name)
        self._call("pause", name)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self._call("resume", name)
        self.paused.discard(name)

    def restore(self) -> None:
        for name in sorted(self.paused):
            self.resume(name)
        for name in sorted(self.touched):
            self.start(name)
        self.touched.clear()


@pytest.fixture
def stack_control(stack: dict[str, str]) -> Iterator[StackControl]:
    """A `StackControl`; whatever the test stopped or paused is running again afterwards."""
    control = StackControl()
    yield control
    control.restore()
