"""infra/compose.yaml parses and refers only to what exists: the Dockerfile and its variant,
files it mounts, TAGFLEET_* settings the service reads, subcommands and flags of the CLI, and
hosts, ports and topics that other services of the same file actually serve; the tags API and
webhook serve (under a profile) run on the consumer's store and result topic and are scraped
as their own jobs; every port is bound to loopback; Grafana and Prometheus run without
default credentials or admin APIs; Kafka keeps its data on its volume."""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_helpers import REPO, cli_parses, known_env, settings_fields

INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
TAGFLEET_SERVICES = ("db-upgrade", "demo-fleet", "tagfleet", "api", "webhooks")


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
        "s3",
        "s3-init",
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
    for address in (tf["TAGFLEET_BOOTSTRAP_SERVERS"], env("s3")["VGW_EVENT_KAFKA_URL"]):
        assert _host_port(address) in advertised
    assert _host_port(tf["TAGFLEET_BOOTSTRAP_SERVERS"])[0] == "kafka"
    topics = re.search(r"for topic in ([^;]+);", script("kafka-init"))
    assert topics is not None
    created = topics.group(1).split()
    for key in ("TAGFLEET_TOPIC", "TAGFLEET_RESULTS_TOPIC", "TAGFLEET_DLQ_TOPIC"):
        assert tf[key] in created, key
    # The S3 server publishes its bucket notifications to the topic tagfleet consumes.
    assert env("s3")["VGW_EVENT_KAFKA_TOPIC"] == tf["TAGFLEET_TOPIC"]


def test_the_s3_server_notifies_kafka_and_init_creates_the_allowed_bucket() -> None:
    s3 = env("s3")
    assert s3["VGW_EVENT_KAFKA_URL"] and s3["VGW_EVENT_KAFKA_TOPIC"]
    assert services()["s3"]["command"][-2:] == ["posix", "/data"]
    assert any(m.endswith(":/data") for m in services()["s3"]["volumes"])
    init = script("s3-init")
    bucket = env("tagfleet")["TAGFLEET_ALLOWED_BUCKETS"]
    assert f'create_bucket(Bucket="{bucket}")' in init
    assert services()["tagfleet"]["depends_on"]["s3-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_s3_endpoint_and_credentials_are_the_s3_servers() -> None:
    tf, s3 = env("tagfleet"), env("s3")
    endpoint = urlsplit(tf["AWS_ENDPOINT_URL_S3"])
    assert endpoint.hostname == "s3"
    assert services()["s3"]["command"][:2] == ["--port", f":{endpoint.port}"]
    assert (tf["AWS_ACCESS_KEY_ID"], tf["AWS_SECRET_ACCESS_KEY"]) == (
        s3["ROOT_ACCESS_KEY"],
        s3["ROOT_SECRET_KEY"],
    )
    assert env("s3-init")["AWS_ENDPOINT_URL_S3"] == tf["AWS_ENDPOINT_URL_S3"]


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
    )
    assert f"127.0.0.1:{port}:{port}" in services()["tagfleet"]["ports"]
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


def test_every_published_port_binds_to_loopback_only() -> None:
    published = 0
    for name, svc in services().items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            assert port.count(":") == 2, f"{name}: {port} (host address, host port, container port)"
            published += 1
    assert published >= 4


def test_grafana_has_no_default_credentials_or_anonymous_access() -> None:
    grafana = env("grafana")
    password = grafana["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), "required, no default"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_prometheus_runs_without_lifecycle_or_admin_api() -> None:
    flags = services()["prometheus"]["command"]
    assert not [
        f for f in flags if f.startswith(("--web.enable-lifecycle", "--web.enable-admin-api"))
    ]
    assert all(m.endswith(":ro") for m in services()["prometheus"]["volumes"] if m.startswith("./"))


def test_kafka_writes_its_log_dirs_on_its_volume() -> None:
    kafka = env("kafka")
    mount = next(m for m in services()["kafka"]["volumes"] if m.startswith("kafka-data:"))
    assert kafka["KAFKA_LOG_DIRS"] == mount.split(":")[1]
    # A fixed cluster id: the recreated broker accepts the data it formatted before.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["CLUSTER_ID"])


def _scrape_job(name: str) -> dict:
    prom = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    return next(j for j in prom["scrape_configs"] if j["job_name"] == name)


def test_the_api_serves_the_consumers_store_on_a_published_port_prometheus_scrapes() -> None:
    args = cli_parses(services()["api"]["command"])
    assert args.handler.__name__ == "_run_api"
    api = env("api")
    assert api["TAGFLEET_STORE"] == env("tagfleet")["TAGFLEET_STORE"]
    assert api["TAGFLEET_FLEET"] == env("tagfleet")["TAGFLEET_FLEET"]  # GET /v1/functions
    assert api["TAGFLEET_API_HOST"] == "0.0.0.0"  # the default, 127.0.0.1, is the container's own
    port = int(api["TAGFLEET_API_PORT"])
    assert f"127.0.0.1:{port}:{port}" in services()["api"]["ports"]
    depends = services()["api"]["depends_on"]
    assert depends["db-upgrade"]["condition"] == "service_completed_successfully"
    assert f"127.0.0.1:{port}/readyz" in " ".join(services()["api"]["healthcheck"]["test"])
    job = _scrape_job("tagfleet-api")
    assert job["static_configs"][0]["targets"] == [f"api:{port}"]
    assert job["static_configs"][0]["labels"]["namespace"] == "compose"
    assert "profiles" not in services()["api"]  # up by default, like the consumer


def test_webhooks_run_only_under_their_profile_on_the_result_topic() -> None:
    svc = services()["webhooks"]
    assert svc["profiles"] == ["webhooks"]
    args = cli_parses(svc["command"])
    assert (args.command, args.webhook_command) == ("webhook", "serve")
    wh = env("webhooks")
    assert wh["TAGFLEET_WEBHOOK_RESULTS_TOPIC"] == env("tagfleet")["TAGFLEET_RESULTS_TOPIC"]
    topics = re.search(r"for topic in ([^;]+);", script("kafka-init"))
    assert topics is not None and wh["TAGFLEET_WEBHOOK_RESULTS_TOPIC"] in topics.group(1).split()
    assert wh["TAGFLEET_BOOTSTRAP_SERVERS"] == env("tagfleet")["TAGFLEET_BOOTSTRAP_SERVERS"]
    # The endpoints' file is on a volume the service mounts (`run --rm webhooks webhook add`
    # writes it there), not in the image's read-only layers.
    mounts = [m.split(":")[1] for m in svc["volumes"]]
    assert any(wh["TAGFLEET_WEBHOOK_WEBHOOKS"].startswith(m + "/") for m in mounts)
    port = int(wh["TAGFLEET_WEBHOOK_METRICS_PORT"])
    assert f"127.0.0.1:{port}:{port}" in svc["ports"]
    assert _scrape_job("tagfleet-webhooks")["static_configs"][0]["targets"] == [f"webhooks:{port}"]


def test_the_consumer_and_the_api_share_one_embedding_store_on_a_named_volume() -> None:
    """Not the default ./tagfleet-embeddings: each container's own, unseen by the API."""
    location = env("tagfleet")["TAGFLEET_EMBEDDINGS"]
    assert env("api")["TAGFLEET_EMBEDDINGS"] == location
    assert env("tagfleet").get("TAGFLEET_STORE_EMBEDDINGS", "true") != "false"
    for service in ("tagfleet", "api"):
        mounts = [m.split(":") for m in services()[service]["volumes"]]
        shared = [(src, dst) for src, dst, *_ in mounts if location.startswith(dst + "/")]
        assert shared and shared[0][0] in compose()["volumes"], service  # a named volume
