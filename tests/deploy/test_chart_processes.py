"""The chart's API and webhook pods, run as processes on the local stack: the container args and
environment that `helm template` renders (the store URL inline, the local broker, the ports
the chart names) start `tagfleet db upgrade` (the hook Job), `tagfleet api` and `tagfleet
webhook serve`; the probes' paths answer 200 on the containers' named ports; /metrics shows
the series the alert rules read; webhook serve delivers the result topic the consumers write
(`config.results_topic`) to an endpoint of the file mounted from the Secret. The volumes are
stood in for by folders of tmp_path at the same paths' places: only the environment's paths
that start with a mount path are moved."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import CHART, REPO, render

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("harness", REPO / "tests/consumers/harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pod(docs: list[dict], kind: str, component: str) -> dict:
    (doc,) = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return doc["spec"]["template"]["spec"]


def _environment(pod: dict, root: Path) -> dict[str, str]:
    """The container's environment as a process gets it: plain values only (the render has no
    Secret reference left), a path under a volume's mount moved under ``root``; nothing of
    this shell's own TAGFLEET_* settings."""
    (container,) = pod["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGFLEET_")}
    mounts = {m["mountPath"]: root / m["name"] for m in container.get("volumeMounts", [])}
    for var in container["env"]:
        assert "valueFrom" not in var, f"{var['name']} still comes from a Secret"
        value = var["value"]
        for mount, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == mount or value.startswith(mount + "/"):
                value = str(local) + value[len(mount) :]
                break
        env[var["name"]] = value
    for local in mounts.values():
        local.mkdir(parents=True, exist_ok=True)
    return env


@contextmanager
def _running(pod: dict, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    (container,) = pod["containers"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", *container["args"]],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(60)


def _probe_urls(pod: dict) -> dict[str, str]:
    """probe kind -> http://127.0.0.1:<the named port's containerPort><path>."""
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    urls = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in container:
            get = container[kind]["httpGet"]
            urls[kind] = f"http://127.0.0.1:{ports[get['port']]}{get['path']}"
    return urls


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 - loopback only
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback only
        return str(r.read().decode())


class _Receiver:
    """A webhook endpoint on loopback: takes every POST (204) and keeps its body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
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


def test_the_charts_api_and_webhook_pods_start_and_answer_their_probes(
    helm: Path, stack, kafka_bootstrap, new_topic, pg_url, tmp_path: Path
) -> None:
    results = new_topic(partitions=1)
    api_port, webhooks_port = _free_port(), _free_port()
    docs = render(
        helm,
        "-f",
        str(CHART / "ci" / "defaults.yaml"),
        "--set",
        "store.existingSecret=",
        "--set-string",
        f"store.url={pg_url}",
        "--set",
        f"config.bootstrap_servers={kafka_bootstrap}",
        "--set",
        f"config.results_topic={results}",
        "--set",
        f"api.port={api_port}",
        "--set",
        "webhooks.enabled=true",
        "--set",
        "webhooks.existingSecret=hooks",
        "--set",
        f"webhooks.metricsPort={webhooks_port}",
    )
    job = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]
    api, webhooks = _pod(docs, "Deployment", "api"), _pod(docs, "Deployment", "webhooks")

    # The hook Job first: the API is ready only on a store at its schema.
    (job_container,) = job["containers"]
    upgrade = subprocess.run(
        [sys.executable, "-m", "consumers.cli", *job_container["args"]],
        env=_environment(job, tmp_path / "job"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr

    # The endpoints' file, where the Secret's key is mounted.
    from consumers.webhooks.registry import add

    wh_env = _environment(webhooks, tmp_path / "webhooks")
    receiver = _Receiver()
    endpoint = add(Path(wh_env["TAGFLEET_WEBHOOK_WEBHOOKS"]), receiver.url, ["tags"], None)
    event = {"asset_id": "s3://photos/cat.jpg", "tenant": "default", "results": {}}
    harness.produce(
        kafka_bootstrap, results, [(b"s3://photos/cat.jpg", json.dumps(event).encode())]
    )

    with ExitStack() as running:
        running.callback(receiver.close)
        running.enter_context(
            _running(api, _environment(api, tmp_path / "api"), tmp_path / "api.log")
        )
        running.enter_context(_running(webhooks, wh_env, tmp_path / "webhooks.log"))
        for name, pod, metric in (
            ("api", api, "tagfleet_api_requests_total"),
            ("webhooks", webhooks, f'tagfleet_webhook_lag{{endpoint="{endpoint.id}"}}'),
        ):
            urls = _probe_urls(pod)
            assert urls["readinessProbe"].endswith("/readyz"), name
            assert urls["livenessProbe"].endswith("/healthz"), name
            logs = tmp_path / f"{name}.log"
            harness.wait_until(
                lambda u=urls["readinessProbe"]: _status(u) == 200,
                60,
                what=f"{name} ready: {logs.read_text()[-2000:] if logs.exists() else ''}",
            )
            for url in urls.values():
                assert _status(url) == 200, url
            base = urls["livenessProbe"].rsplit("/", 1)[0]
            assert metric in _metrics(base + "/metrics"), name
        # webhook serve reads the topic the consumers publish results to.
        harness.wait_until(lambda: receiver.bodies, 60, what="the result event POSTed")
        assert json.loads(receiver.bodies[0]) == event
