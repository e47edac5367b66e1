"""infra/compose.yaml parses and refers only to what exists: the Dockerfile and its variant,
files it mounts, TAGFLEET_* settings the service reads, subcommands and flags of the CLI, and
hosts, ports and topics that other services of the same file actually serve."""

from __future__ import annotations

import re
import shlex
from functools import cache
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_helpers import REPO, cli_parses, known_env, settings_fields

INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
TAGFLEET_SERVICES = ("db-upgrade", "demo-fleet", "tagfleet")


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (services()[service].get("environment") or {}).items()}


def script(service: str) -> str:
    return "\n".join(services()[service]["command"])


def test_compose_parses_with_named_volumes_and_known_dependencies() -> None:
    assert set(services()) >= {
        "kafka",
        "minio",
        "minio-init",
        "postgres",
        "tagfleet",
        "prometheus",
        "grafana",
        *TAGFLEET_SERVICES,
    }
    volumes = set(compose()["volumes"])
    for name, svc in services().items():
        for dep in svc.get("depends_on", {}):
            assert dep in services(), f"{name} depends on unknown service {dep}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith("."):
                assert source in volumes, f"{name}: undeclared volume {source}"


def test_third_party_images_are_pinned() -> None:
    for name, svc in services().items():
        if "build" in svc:
            continue
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: pin {image}"


@pytest.mark.parametrize("service", TAGFLEET_SERVICES)
def test_tagfleet_services_build_the_cpu_variant_of_the_repository_dockerfile(service: str) -> None:
    svc = services()[service]
    build = svc["build"]
    context = (INFRA / build["context"]).resolve()
    assert context == REPO
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    variant = build["args"]["VARIANT"]
    assert re.search(rf"^FROM \S+ AS runtime-{variant}$", dockerfile.read_text(), re.M)
    assert svc["image"] == f"tagfleet:{variant}"


def test_every_mounted_file_exists() -> None:
    for name, svc in services().items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("service", TAGFLEET_SERVICES)
def test_tagfleet_env_is_settings_the_service_reads(service: str) -> None:
    unknown = {k for k in env(service) if k.startswith("TAGFLEET_")} - known_env()
    assert not unknown, f"{service} sets variables the service does not read: {unknown}"


@pytest.mark.parametrize("service", TAGFLEET_SERVICES)
def test_tagfleet_commands_parse_with_the_real_cli(service: str) -> None:
    args = cli_parses(services()[service]["command"])
    assert callable(args.handler)


def test_demo_fleet_lands_where_the_consumer_reads_it() -> None:
    args = cli_parses(services()["demo-fleet"]["command"])
    assert args.build_fleet_only
    # consumers/demo.py writes <workdir>/fleet/fleet.yaml
    assert env("tagfleet")["TAGFLEET_FLEET"] == f"{args.workdir}/fleet/fleet.yaml"
    cache_mount = next(m for m in services()["tagfleet"]["volumes"] if "tagfleet-cache" in m)
    assert args.workdir.startswith(cache_mount.split(":")[1] + "/")
    assert env("tagfleet")["TAGFLEET_CACHE_DIR"] == cache_mount.split(":")[1]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_kafka_address_and_topics_agree_across_services() -> None:
    kafka = env("kafka")
    advertised = {
        _host_port(urlsplit(u).netloc) for u in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    tf = env("tagfleet")
    for address in (tf["TAGFLEET_BOOTSTRAP_SERVERS"], env("minio")["MINIO_NOTIFY_KAFKA_BROKERS"]):
        assert _host_port(address) in advertised
    assert _host_port(tf["TAGFLEET_BOOTSTRAP_SERVERS"])[0] == "kafka"
    created = re.search(r"for topic in ([^;]+);", script("kafka-init")).group(1).split()
    for key in ("TAGFLEET_TOPIC", "TAGFLEET_RESULTS_TOPIC", "TAGFLEET_DLQ_TOPIC"):
        assert tf[key] in created, key
    # MinIO publishes its bucket notifications to the topic tagfleet consumes.
    assert env("minio")["MINIO_NOTIFY_KAFKA_TOPIC"] == tf["TAGFLEET_TOPIC"]


def test_minio_notifies_kafka_on_put_and_delete_of_the_allowed_bucket() -> None:
    minio = env("minio")
    assert minio["MINIO_NOTIFY_KAFKA_ENABLE"] == "on"
    lines = [shlex.split(line) for line in script("minio-init").splitlines() if line.strip()]
    event = next(cmd for cmd in lines if cmd[:3] == ["mc", "event", "add"])
    # Target id "_" because the MINIO_NOTIFY_KAFKA_* variables carry no _<ID> suffix.
    assert not any(re.match(r"MINIO_NOTIFY_KAFKA_ENABLE_\w+", k) for k in minio)
    assert event[4] == "arn:minio:sqs::_:kafka"
    assert event[event.index("--event") + 1] == "put,delete"
    bucket = event[3].split("/", 1)[1]
    assert ["mc", "mb", "--ignore-existing", f"local/{bucket}"] in lines
    assert env("tagfleet")["TAGFLEET_ALLOWED_BUCKETS"] == bucket
    creds = env("minio-init")
    assert (creds["MINIO_ROOT_USER"], creds["MINIO_ROOT_PASSWORD"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )


def test_s3_endpoint_and_credentials_are_minios() -> None:
    tf, minio = env("tagfleet"), env("minio")
    endpoint = urlsplit(tf["AWS_ENDPOINT_URL_S3"])
    assert endpoint.hostname == "minio"
    assert f"{endpoint.port}:{endpoint.port}" in services()["minio"]["ports"]
    assert (tf["AWS_ACCESS_KEY_ID"], tf["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )


def test_store_url_is_the_postgres_service() -> None:
    url = urlsplit(env("tagfleet")["TAGFLEET_STORE"])
    pg = env("postgres")
    assert url.scheme == "postgresql+psycopg"
    assert (url.hostname, url.port, url.path.lstrip("/")) == ("postgres", 5432, pg["POSTGRES_DB"])
    assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert env("db-upgrade")["TAGFLEET_STORE"] == env("tagfleet")["TAGFLEET_STORE"]
    assert env("tagfleet")["TAGFLEET_MIGRATE_ON_START"] == "false"  # db-upgrade did it


def test_metrics_port_is_published_and_scraped_by_prometheus() -> None:
    port = int(
        env("tagfleet").get("TAGFLEET_METRICS_PORT", settings_fields()["metrics_port"].default)
    )  # type: ignore[attr-defined]
    assert f"{port}:{port}" in services()["tagfleet"]["ports"]
    mounts = dict(m.split(":")[:2] for m in services()["prometheus"]["volumes"])
    assert mounts["./prometheus"] == "/etc/prometheus"
    config_dir = INFRA / "prometheus"
    prom = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "tagfleet")
    assert job["static_configs"][0]["targets"] == [f"tagfleet:{port}"]
    for rule_file in prom["rule_files"]:
        assert (config_dir / rule_file).is_file()


def test_stop_grace_period_covers_the_drain() -> None:
    grace = services()["tagfleet"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) >= float(env("tagfleet")["TAGFLEET_DRAIN_TIMEOUT_S"]) + 5
