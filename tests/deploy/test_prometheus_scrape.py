"""A real Prometheus (Debian's package) scrapes a running `tagfleet consume` on the local stack,
a `tagfleet api` on its store (a few requests made) and a `tagfleet webhook serve` delivering
its result topic to a local receiver; then every dashboard query (with the namespace, pod,
function, shadow and baseline variables set as Grafana would) and every metric the alert rules
read returns data, and every rule evaluates without error. This is what shows that no panel
refers to a metric the services do not export. Metrics of other exporters (DCGM,
kafka-exporter, kube-state-metrics) are left out: none runs here.

It also shows that the ready gauge tells the truth on its own: nobody requests /readyz in this
test, yet Prometheus reads tagfleet_ready 1, and it stays 1 through the database outage
(readiness is not tied to a shared dependency).

The run covers each outcome so that labelled series exist: stored images, a removal, bad
events (DLQ), and a short PostgreSQL outage (transient store errors, paused partitions).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DASHBOARD, EXTERNAL_METRICS, REPO, RULES, ensure_tool, metric_names

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("harness", REPO / "tests/consumers/harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

# Not exported here: no DCGM exporter, kafka-exporter or kube-state-metrics runs in the tests.
OTHER_EXPORTERS = EXTERNAL_METRICS - {"up"}
# The targets' labels, as the Prometheus Operator sets them in Kubernetes: the consumer, the
# tags API and the webhook deliverer, each its own job and pod.
NAMESPACE, POD = "tagfleet-test", "tagfleet-0"
API_POD, WEBHOOKS_POD = "tagfleet-api-0", "tagfleet-webhooks-0"
# The Pod variable at "All" would send .*; three pods picked send them as Grafana formats a
# multi-value regex variable.
PODS = f"({POD}|{API_POD}|{WEBHOOKS_POD})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prom_query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback only
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def grafana_to_promql(expr: str) -> str:
    """Replace the dashboard's variables with what Grafana would send: this namespace and pod,
    every function, a test function as the shadow, a baseline the run can reach."""
    expr = expr.replace("$__rate_interval", "1m").replace("$baseline", "10s")
    expr = expr.replace("$namespace", NAMESPACE).replace("$pod", PODS)
    expr = expr.replace("$shadow", "shape")  # the test fleet's classify function
    return re.sub(r"\$function\b", ".*", expr)


def _add_shadow(fleet: Path) -> None:
    """A head-only shadow of the test fleet's ``shape``, on the same tiny backbone."""
    from models import save_artifact, zero_shot
    from models.backbones import CONFIG_DIR
    from models.fleet import FleetEntry, Role, read_fleet_config, write_fleet_config

    tiny = str(CONFIG_DIR / "tiny-vit.json")
    candidate = zero_shot("shape", "classify", ("circle", "square"), tiny)
    save_artifact(candidate, str(fleet.parent / "shape-shadow"))
    config = read_fleet_config(fleet)
    config.functions.append(FleetEntry(name="shape", artifact="shape-shadow", role=Role.SHADOW))
    write_fleet_config(fleet, config)


@pytest.fixture
def prometheus(tmp_path: Path) -> Any:
    """Start Prometheus on loopback with a config scraping the consumer's port and the
    ``others`` ((job, port, pod) each); yields start, which returns its base URL."""
    ensure_tool("promtool.sh")  # installs the prometheus package, server binary included
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    port = free_port()
    procs: list[subprocess.Popen] = []

    def start(target_port: int, others: tuple[tuple[str, int, str], ...] = ()) -> str:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{port}"],
                            "labels": {"namespace": NAMESPACE, "pod": pod},
                        }
                    ],
                }
                for job, port, pod in (("tagfleet", target_port, POD), *others)
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - lives with the process
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{port}"
        harness.wait_until(lambda: _ready(base), 60, what="prometheus ready")
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(30)


def _ready_gauge(base: str) -> str:
    (sample,) = prom_query(base, f'tagfleet_ready{{job="tagfleet",namespace="{NAMESPACE}"}}')
    return str(sample["value"][1])


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:  # noqa: S310
            return r.status == 200
    except OSError:
        return False


class _Receiver:
    """A webhook endpoint on loopback that takes every POST (204) and counts them."""

    def __init__(self) -> None:
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def _process(
    argv: list[str], log: Path, env: dict[str, str], stopped: tuple[int, ...] = (0,)
) -> Iterator[subprocess.Popen]:
    """``tagfleet ARGV`` in a child process, its output in ``log``; stopped with SIGTERM on
    exit, which it must end with one of the ``stopped`` codes."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", *argv],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            code = proc.wait(60)
    assert code in stopped, f"tagfleet {argv[0]} exited {code}: {log.read_text()[-3000:]}"


def _api_requests(base: str, key: str, asset_id: str) -> None:
    """A few requests of each pre-registered route, and a 404 and a 401."""
    headers = {"Authorization": f"Bearer {key}"}
    quoted = urllib.parse.quote(asset_id, safe="")
    paths = [
        f"/v1/assets/{quoted}",
        "/v1/search?label=circle&limit=5",
        "/v1/review",
        "/v1/assets/s3%3A%2F%2Fnowhere%2Fx.png",  # 404
    ]
    for path in paths:
        request = urllib.request.Request(base + path, headers=headers)  # noqa: S310 - loopback
        try:
            urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
        except urllib.error.HTTPError as exc:
            assert exc.code == 404, (path, exc.code)
    try:
        urllib.request.urlopen(base + "/v1/search?label=circle", timeout=10)  # noqa: S310
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def test_every_dashboard_and_alert_query_returns_data_from_a_live_service(
    stack,
    kafka_bootstrap,
    kafka_admin,
    new_topic,
    new_bucket,
    s3,
    pg_url,
    stack_control,
    prometheus,
    tmp_path,
):
    fleet = harness.build_test_fleet(tmp_path / "fleet")
    _add_shadow(fleet)  # its agreement panel needs a shadow candidate at work (issue 16)
    bucket = new_bucket()
    keys = [f"img/{i}.png" for i in range(12)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=harness.image_bytes(i))
    topic, results, dlq = new_topic(partitions=2), new_topic(partitions=1), new_topic(partitions=1)
    events = [harness.s3_notification(bucket, k) for k in keys[:8]]
    events += [(b"bad", b"not json"), harness.native_event(bucket, "missing.png")]
    events.append((None, b'{"Event": "s3:TestEvent", "Bucket": "Test-Bucket"}'))  # ignored
    s3.delete_object(Bucket=bucket, Key=keys[11])  # removals are applied once the object is gone
    events.append(harness.s3_notification(bucket, keys[11], name="ObjectRemoved:Delete"))
    harness.produce(kafka_bootstrap, topic, events)

    metrics_port, api_port, webhooks_port = free_port(), free_port(), free_port()
    group = f"g-{topic}"
    consumer = harness.ConsumerProcess(
        tmp_path / "consumer.log",
        {**stack, "TAGFLEET_LOG_LEVEL": "INFO"},
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=group,
        results_topic=results,
        dlq_topic=dlq,
        store=pg_url,
        fleet=fleet,
        metrics_port=metrics_port,
        batch_size=4,
    )
    others = ExitStack()
    receiver = _Receiver()
    others.callback(receiver.close)
    _api_and_webhooks(
        others,
        tmp_path,
        stack,
        pg_url,
        fleet,
        (kafka_bootstrap, results),
        (api_port, webhooks_port),
        receiver,
    )
    try:
        base = prometheus(
            metrics_port,
            (
                ("tagfleet-api", api_port, API_POD),
                ("tagfleet-webhooks", webhooks_port, WEBHOOKS_POD),
            ),
        )

        def processed() -> bool:
            return harness.group_lag(kafka_admin, kafka_bootstrap, group, topic) == 0

        harness.wait_until(processed, 240, what="first events processed")
        key = _api_key(pg_url)
        harness.wait_until(lambda: _up(f"http://127.0.0.1:{api_port}"), 120, what="the API up")
        _api_requests(f"http://127.0.0.1:{api_port}", key, f"s3://{bucket}/{keys[0]}")
        # the webhook endpoint gets the result events (stored ones and the removal)
        harness.wait_until(lambda: receiver.posts >= 8, 120, what="results POSTed to the hook")
        # A short store outage: transient store errors (and paused partitions) get series.
        stack_control.stop("postgres")
        harness.produce(
            kafka_bootstrap, topic, [harness.s3_notification(bucket, k) for k in keys[8:]]
        )
        harness.wait_until(
            lambda: prom_query(base, "sum(tagfleet_transient_errors_total)"),
            120,
            what="a transient error counted",
        )
        # The store is down: the pod stays ready (nobody asked /readyz: the gauge is its own).
        assert _ready_gauge(base) == "1"
        stack_control.start("postgres")
        harness.wait_until(processed, 240, what="events processed after the outage")
        time.sleep(5)  # a few more scrapes, so that rate() over 1m has points

        queries = []
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel.get("targets", []):
                if metric_names(target["expr"]) & OTHER_EXPORTERS:
                    continue
                queries.append((panel["title"], grafana_to_promql(target["expr"])))
        rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        for rule in rules:
            for name in metric_names(rule["expr"]) - OTHER_EXPORTERS:
                queries.append((rule["alert"], f'{name}{{job="{_job_of(name)}"}}'))
        # The drift baseline (offset) needs the scrapes of 10 s before: retry for a while.
        empty = [(where, expr) for where, expr in queries if not prom_query(base, expr)]
        deadline = time.monotonic() + 45
        while empty and time.monotonic() < deadline:
            time.sleep(2)
            empty = [(where, expr) for where, expr in empty if not prom_query(base, expr)]
        assert not empty, "queries without data:\n" + "\n".join(f"{w}: {e}" for w, e in empty)
        assert _ready_gauge(base) == "1"

        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:  # noqa: S310
            groups = json.load(r)["data"]["groups"]
        health = {rule["name"]: rule["health"] for g in groups for rule in g["rules"]}
        assert set(health) == {r["alert"] for r in rules}
        assert set(health.values()) == {"ok"}, health
    finally:
        code = consumer.terminate()
        others.close()  # the API and webhook serve stop cleanly too
    assert code == 0, consumer.logs()[-3000:]


def _job_of(metric: str) -> str:
    """The Prometheus job that exports ``metric``: the API's and webhook serve's are their own
    (the chart's ServiceMonitors, infra/prometheus/prometheus.yml)."""
    if metric.startswith("tagfleet_api_"):
        return "tagfleet-api"
    if metric.startswith("tagfleet_webhook_"):
        return "tagfleet-webhooks"
    return "tagfleet"


def _api_key(store_url: str) -> str:
    from consumers.api.keys import create_key
    from consumers.store.engine import create_store_engine

    engine = create_store_engine(store_url)
    try:
        return create_key(engine, "default", ("read",), "scrape test")
    finally:
        engine.dispose()


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as r:  # noqa: S310
            return r.status == 200
    except OSError:
        return False


def _api_and_webhooks(
    running: ExitStack,
    tmp_path: Path,
    stack: dict[str, str],
    store: str,
    fleet: Path,
    kafka: tuple[str, str],
    ports: tuple[int, int],
    receiver: _Receiver,
) -> None:
    """Start ``tagfleet api`` on the store and ``tagfleet webhook serve`` of the result topic
    (``kafka``: bootstrap servers, topic) to the receiver, on ``ports``; ``running`` stops
    them."""
    from consumers.webhooks.registry import add

    (bootstrap, results), (api_port, webhooks_port) = kafka, ports
    hooks = tmp_path / "webhooks.json"
    add(hooks, receiver.url, ["tags", "removed"], None)
    api = _process(
        ["api", "--port", str(api_port)],
        tmp_path / "api.log",
        {**stack, "TAGFLEET_STORE": store, "TAGFLEET_FLEET": str(fleet)},
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit -15)
        (0, -15),
    )
    webhooks = _process(
        ["webhook", "serve"],
        tmp_path / "webhooks.log",
        {
            **stack,
            "TAGFLEET_BOOTSTRAP_SERVERS": bootstrap,
            "TAGFLEET_WEBHOOK_WEBHOOKS": str(hooks),
            "TAGFLEET_WEBHOOK_RESULTS_TOPIC": results,
            "TAGFLEET_WEBHOOK_GROUP": f"wh-{results}",
            "TAGFLEET_WEBHOOK_METRICS_PORT": str(webhooks_port),
            "TAGFLEET_WEBHOOK_METRICS_HOST": "127.0.0.1",
        },
    )
    running.enter_context(api)
    running.enter_context(webhooks)
