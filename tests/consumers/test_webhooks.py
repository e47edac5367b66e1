"""Webhooks against local receivers (issue 18 item 6): ``tagfleet webhook serve`` on the real
Kafka POSTs every result event with a signature the receiver verifies; a receiver answering
500 for a while gets every event once it recovers; one that hangs does not slow another; one
gone longer than the budget ends in the dead letters, and ``webhook redrive`` delivers them,
each once; the delivery metrics move with a delivery, a retry and a dead letter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from api_harness import tagfleet
from harness import REPO, free_port, produce, read_topic, wait_until
from prometheus_client.parser import text_string_to_metric_families

from consumers.webhooks.signing import HEADER, verify

pytestmark = pytest.mark.integration


class Receiver:
    """A local HTTP endpoint: records what it got; ``mode`` says how it answers."""

    def __init__(self, secret: str = "", mode: str = "ok", port: int = 0) -> None:
        self.secret, self.mode, self.started = secret, mode, time.monotonic()
        self.bodies: list[bytes] = []
        self.bad_signatures = 0
        self.times: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.mode == "hang":
                    time.sleep(30)
                if receiver.mode == "flaky" and time.monotonic() - receiver.started < 4:
                    self.send_response(500)
                    self.end_headers()
                    return
                if receiver.secret and not verify(
                    body, self.headers.get(HEADER, ""), receiver.secret, int(time.time())
                ):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.bodies.append(body)
                receiver.times.append(time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def assets(self) -> set[str]:
        return {json.loads(b)["asset_id"] for b in self.bodies}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _events(n: int, tenant: str = "acme") -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        asset_id = f"s3://lib/{i:03d}.png"
        event = {"asset_id": asset_id, "uri": asset_id, "functions": {}, "tenant": tenant}
        out.append((asset_id.encode(), json.dumps(event).encode()))
    return out


def _add(env: dict[str, str], url: str, *extra: str) -> dict[str, str]:
    done = tagfleet(env, "webhook", "add", url, *extra)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture
def serve(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"webhooks-{len(procs)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", "webhook", "serve"],
            cwd=REPO,
            env={**os.environ, **env, "TAGFLEET_BOOTSTRAP_SERVERS": kafka_bootstrap},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(60)


def _env(tmp_path: Path, topic: str, dlq: str, **more: str) -> dict[str, str]:
    return {
        "TAGFLEET_WEBHOOK_WEBHOOKS": str(tmp_path / "webhooks.json"),
        "TAGFLEET_WEBHOOK_RESULTS_TOPIC": topic,
        "TAGFLEET_WEBHOOK_DLQ_TOPIC": dlq,
        "TAGFLEET_WEBHOOK_GROUP": f"wh-{topic}",
        "TAGFLEET_WEBHOOK_TIMEOUT_S": "2",
        "TAGFLEET_WEBHOOK_BACKOFF_S": "0.2",
        "TAGFLEET_WEBHOOK_METRICS_PORT": "0",  # no /metrics unless a test asks
        **more,
    }


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``webhook serve``'s /metrics: (sample name, sorted labels) -> value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
        text = r.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _metric(port: int, name: str, **labels: str) -> float:
    try:
        return _scrape(port).get((name, tuple(sorted(labels.items()))), -1.0)
    except OSError:
        return -1.0  # not serving yet


def test_signed_retried_and_isolated(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Any, serve: Any
) -> None:
    topic, dlq = new_topic(partitions=2), new_topic(partitions=1)
    env = _env(tmp_path, topic, dlq)
    good, flaky, hanging = Receiver(), Receiver(mode="flaky"), Receiver(mode="hang")
    other_tenant, removals_only = Receiver(), Receiver()
    try:
        good.secret = _add(env, good.url)["secret"]
        flaky.secret = _add(env, flaky.url)["secret"]
        _add(env, hanging.url)
        _add(env, other_tenant.url, "--tenant", "globex")
        _add(env, removals_only.url, "--events", "removed")
        events = _events(20)
        removal = (b"s3://lib/gone.png", b'{"asset_id": "s3://lib/gone.png", "removed": true}')
        produce(kafka_bootstrap, topic, [*events, removal])
        started = time.monotonic()
        proc = serve(env)
        expected = {k.decode() for k, _ in events} | {"s3://lib/gone.png"}
        wait_until(lambda: good.assets() == expected, 60, 0.2, "every event at the good one")
        good_done = time.monotonic() - started
        # the hanging endpoint holds its own thread for 30 s per try: the good one is not
        # held back by it (nor by the flaky one's retries)
        assert good_done < 25, good_done
        assert good.bad_signatures == 0
        wait_until(lambda: flaky.assets() == expected, 90, 0.5, "the flaky one recovered")
        assert flaky.bad_signatures == 0
        assert other_tenant.bodies == []
        wait_until(lambda: removals_only.assets() == {"s3://lib/gone.png"}, 30, 0.2, "removal")
        assert len(removals_only.bodies) == 1
        assert proc.poll() is None
    finally:
        for r in (good, flaky, hanging, other_tenant, removals_only):
            r.close()


def test_a_receiver_gone_past_the_budget_is_dead_lettered_and_redriven_once(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: Any, new_topic: Any, serve: Any
) -> None:
    topic, dlq = new_topic(partitions=1), new_topic(partitions=1)
    metrics = free_port()
    env = _env(
        tmp_path,
        topic,
        dlq,
        TAGFLEET_WEBHOOK_BUDGET_S="2",
        TAGFLEET_WEBHOOK_METRICS_PORT=str(metrics),
    )
    port = free_port()  # nothing listens there yet
    endpoint = _add(env, f"http://127.0.0.1:{port}/hook")
    e = endpoint["id"]
    events = _events(5)
    produce(kafka_bootstrap, topic, events)
    serve(env)
    # every series exists from the start; the lag probe sees the 5 waiting events
    wait_until(lambda: _metric(metrics, "tagfleet_webhook_lag", endpoint=e) > 0, 30, 0.2, "lag")
    letters = read_topic(kafka_bootstrap, dlq, 5, timeout_s=90)
    assert len(letters) == 5
    assert {dict(r.headers)["tagfleet-webhook-endpoint"].decode() for r in letters} == {e}
    assert sorted(r.value for r in letters) == sorted(v for _, v in events)
    dead = ("tagfleet_webhook_deliveries_total", {"endpoint": e, "outcome": "dead_lettered"})
    wait_until(lambda: _metric(metrics, dead[0], **dead[1]) == 5, 10, 0.2, "dead letters counted")
    # connection refused at once, retried within the 2 s budget: more than one POST each
    assert _metric(metrics, "tagfleet_webhook_retries_total", endpoint=e) >= 5
    delivered = {"endpoint": e, "outcome": "delivered"}
    assert _metric(metrics, "tagfleet_webhook_deliveries_total", **delivered) == 0
    back = Receiver(secret=endpoint["secret"], port=port)
    try:
        more = [(b"s3://lib/new.png", b'{"asset_id": "s3://lib/new.png", "functions": {}}')]
        produce(kafka_bootstrap, topic, more)
        wait_until(
            lambda: _metric(metrics, "tagfleet_webhook_deliveries_total", **delivered) == 1,
            30,
            0.2,
            "a delivery counted",
        )
        assert _metric(metrics, "tagfleet_webhook_delivery_seconds_count", endpoint=e) == 1
        assert back.assets() == {"s3://lib/new.png"}
        wait_until(lambda: _metric(metrics, "tagfleet_webhook_lag", endpoint=e) == 0, 30, 0.5)

        def redrive() -> dict[str, Any]:
            done = tagfleet(
                {**env, "TAGFLEET_BOOTSTRAP_SERVERS": kafka_bootstrap}, "webhook", "redrive", e
            )
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout))

        ledger = f"{dlq}.redrives"
        assert redrive() == {
            "delivered": 5,
            "failed": 0,
            "already_delivered": 0,
            "ledger": ledger,
        }
        assert back.assets() == {k.decode() for k, _ in events} | {"s3://lib/new.png"}
        assert back.bad_signatures == 0
        # the ledger remembers them: a second redrive sends nothing
        assert redrive() == {
            "delivered": 0,
            "failed": 0,
            "already_delivered": 5,
            "ledger": ledger,
        }
        assert len(back.bodies) == 6
    finally:
        back.close()
        kafka_admin.delete_topics([f"{dlq}.redrives"])


def test_a_redrive_sends_only_what_no_earlier_redrive_delivered(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: Any, new_topic: Any
) -> None:
    """The ledger in-process: a POST that fails is sent again by the next redrive, and only it;
    another endpoint's dead letters are never sent."""
    from kafka import KafkaProducer

    from consumers.webhooks.dispatch import ENDPOINT_HEADER, Delivery, redrive
    from consumers.webhooks.registry import add

    dlq = new_topic(partitions=2)
    mine = add(tmp_path / "w.json", "http://127.0.0.1:9/hook", ["tags"], None)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i, owner in enumerate(["mine", "other", "mine", "mine", "other", "mine"]):
        endpoint = mine.id if owner == "mine" else "0ther000"
        producer.send(
            dlq,
            key=f"k{i}".encode(),
            value=json.dumps({"asset_id": f"a{i}"}).encode(),
            headers=[(ENDPOINT_HEADER, endpoint.encode())],
        )
    producer.flush(30)
    producer.close()
    sent: list[str] = []
    tries: Counter[str] = Counter()

    def post_once(_: Any, body: bytes, __: float) -> str | None:
        asset = json.loads(body)["asset_id"]
        sent.append(asset)
        tries[asset] += 1
        return "HTTP 500" if asset == "a2" and tries[asset] == 1 else None  # a2 fails once

    common = {"bootstrap_servers": kafka_bootstrap}
    try:
        first = redrive(mine, kafka=common, dlq_topic=dlq, policy=Delivery(), post_once=post_once)
        assert (first.delivered, first.failed, first.already) == (3, 1, 0)
        assert sorted(sent) == ["a0", "a2", "a3", "a5"]
        sent.clear()
        second = redrive(mine, kafka=common, dlq_topic=dlq, policy=Delivery(), post_once=post_once)
        assert (second.delivered, second.failed, second.already) == (1, 0, 3)
        assert sent == ["a2"]
        sent.clear()
        third = redrive(mine, kafka=common, dlq_topic=dlq, policy=Delivery(), post_once=post_once)
        assert (third.delivered, third.failed, third.already, sent) == (0, 0, 4, [])
        assert first.unrecorded == second.unrecorded == []
    finally:
        kafka_admin.delete_topics([f"{dlq}.redrives"])


def test_rotation_signs_with_both_secrets(tmp_path: Path) -> None:
    from consumers.webhooks.signing import sign

    env = {"TAGFLEET_WEBHOOK_WEBHOOKS": str(tmp_path / "w.json")}
    first = _add(env, "http://127.0.0.1:9/hook")
    rotated = tagfleet(env, "webhook", "rotate", first["id"])
    second = json.loads(rotated.stdout)["secret"]
    stored = json.loads((tmp_path / "w.json").read_text())["endpoints"][0]["secrets"]
    assert stored == [second, first["secret"]]
    header = sign(b"{}", stored, int(time.time()))
    assert verify(b"{}", header, first["secret"], int(time.time()))
    assert verify(b"{}", header, second, int(time.time()))
    assert not verify(b"{}", header, "wrong", int(time.time()))
    assert not verify(b"{}", header, second, int(time.time()) + 3600)  # stale timestamp
    tagfleet(env, "webhook", "rotate", first["id"], "--finish")
    stored = json.loads((tmp_path / "w.json").read_text())["endpoints"][0]["secrets"]
    assert stored == [second]
    assert oct((tmp_path / "w.json").stat().st_mode & 0o777) == "0o600"
