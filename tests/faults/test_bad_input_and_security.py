"""Bad input ends in the DLQ with the right reason while the consumer keeps going (the cases
``tests/consumers/test_service_e2e.py`` does not cover), memory stays bounded, Kafka
SASL/PLAIN works end to end without the password reaching logs or metrics, and so does SSL
with client certificates (mutual TLS), while a client the broker or the client itself cannot
trust stops with one clear error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from harness import ConsumerProcess, env_for
from PIL import Image
from scenario import CLIENTS

pytestmark = [pytest.mark.faults]

UNSUPPORTED_URIS = [
    "s3://127.0.0.1/k.png",
    "s3://127.1/k.png",
    "s3://0x7f.0.0.1/k.png",
    "s3://2130706433/k.png",
    "s3://0177.0.0.1/k.png",
    "s3://[::1]/k.png",
    "s3://169.254.169.254/latest/meta-data",
    "s3://localhost/k.png",
    "s3://metadata.localhost/k.png",
    "http://169.254.169.254/latest/meta-data",
    "https://example.com/a.png",
    "file:///etc/passwd",
    "gs://bucket/k.png",
    "s3://bucket-without-key",
]


def _encode(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 120, 200) if mode == "RGB" else 3).save(out, format=fmt)
    return out.getvalue()


def _huge_gif() -> bytes:
    """A 1x1 frame on a 65535 x 65535 logical screen (Pillow reports the screen size)."""
    data = bytearray(_encode("GIF", "P", (1, 1)))
    data[6:10] = b"\xff\xff\xff\xff"
    return bytes(data)


def _objects() -> dict[str, tuple[bytes, str]]:
    objects: dict[str, tuple[bytes, str]] = {}
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"):
        data = _encode(fmt, size=(160, 120))
        objects[f"bad/{fmt}-half"] = (data[: len(data) // 2], "image_decode_failed")
        objects[f"bad/{fmt}-header"] = (data[:24], "image_decode_failed")
    objects["bad/huge-canvas.gif"] = (_huge_gif(), "image_too_large")
    objects["bad/image.ppm"] = (_encode("PPM"), "unsupported_format")
    objects["bad/image.ico"] = (_encode("ICO"), "unsupported_format")
    objects["bad/doc.pdf"] = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "unsupported_format")
    objects["bad/image.svg"] = (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format")
    return objects


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_bad_input_is_dead_lettered_with_its_reason_and_good_input_flows(scenario, s3):
    ledger = scenario.ledger
    for key, (data, _) in _objects().items():
        s3.put_object(Bucket=scenario.bucket, Key=key, Body=data)
    scenario.produce(100, prefix="good-a")
    for i, uri in enumerate(UNSUPPORTED_URIS):
        key = f"uri-{i}"
        ledger.produce(
            [(key, json.dumps({"asset_id": key, "uri": uri}).encode())], "unsupported_uri"
        )
    for key, (_, reason) in _objects().items():
        asset = f"obj-{key}"
        uri = f"s3://{scenario.bucket}/{key}"
        ledger.produce([(asset, json.dumps({"asset_id": asset, "uri": uri}).encode())], reason)
    big = json.dumps({"asset_id": "big", "uri": "s3://b/k", "attributes": {"x": "y" * 200_000}})
    ledger.produce([("big", big.encode())], "event_too_large")
    ledger.produce([("deep", b"[" * 40_000 + b"]" * 40_000)], "invalid_json")
    scenario.produce(100, prefix="good-b")
    # TIFF and BMP are off by default; their decoders are exercised here on purpose
    consumer = scenario.start(max_event_bytes=100_000, image_formats="JPEG,PNG,WEBP,GIF,TIFF,BMP")
    scenario.wait_lag_zero(300)
    rss_mib = _rss_kib(consumer.proc.pid) // 1024
    assert consumer.alive(), scenario.tail()
    assert consumer.terminate() == 0, scenario.tail()
    figures = ledger.figures("bad input", scenario.logs, None, rss_mib=rss_mib)
    assert (figures.lost, figures.duplicates) == (0, 0)
    assert ledger.wrong_dlq_reasons() == {}
    assert figures.dead_lettered == len(ledger.expected_dlq)
    assert figures.stored == 200
    assert rss_mib < 2048, "memory must stay bounded on hostile input"


@pytest.mark.parametrize("kafka_client", CLIENTS)
def test_sasl_plain_end_to_end_and_no_secret_in_logs_or_metrics(scenario, kafka_sasl_config):
    password = kafka_sasl_config["sasl_plain_password"]
    scenario.ledger.produce(
        scenario.ledger.native_events(scenario.bucket, scenario.objects, 60),
        producer_config=kafka_sasl_config,
    )
    env = {
        "TAGFLEET_SECURITY_PROTOCOL": kafka_sasl_config["security_protocol"],
        "TAGFLEET_SASL_MECHANISM": kafka_sasl_config["sasl_mechanism"],
        "TAGFLEET_SASL_PLAIN_USERNAME": kafka_sasl_config["sasl_plain_username"],
        "TAGFLEET_SASL_PLAIN_PASSWORD": password,
        "TAGFLEET_LOG_LEVEL": "DEBUG",
    }
    consumer = scenario.start(
        env=env, bootstrap_servers=kafka_sasl_config["bootstrap_servers"], metrics_host="127.0.0.1"
    )
    scenario.wait_lag_zero(240)
    status, metrics = consumer.get("/metrics")
    health = consumer.get("/healthz")
    assert consumer.terminate() == 0, scenario.tail()
    figures = scenario.ledger.figures(scenario.label("sasl/plain"), scenario.logs, None)
    assert (figures.lost, figures.duplicates, figures.stored) == (0, 0, 60)
    assert status == 200 and health[0] == 200
    log = consumer.logs()
    assert '"host": "127.0.0.1"' in log
    assert password not in log and password not in metrics


def _ssl_env(config: dict[str, str], *files: str) -> dict[str, str]:
    """``TAGFLEET_*`` settings for the SSL listener with only ``files`` of cafile, certfile and
    keyfile set."""
    env = {"TAGFLEET_SECURITY_PROTOCOL": config["security_protocol"]}
    for name in files:
        env[f"TAGFLEET_SSL_{name.upper()}"] = config[f"ssl_{name}"]
    return env


def test_ssl_mutual_tls_end_to_end(scenario, kafka_ssl_config):
    scenario.ledger.produce(
        scenario.ledger.native_events(scenario.bucket, scenario.objects, 60),
        producer_config=kafka_ssl_config,
    )
    env = _ssl_env(kafka_ssl_config, "cafile", "certfile", "keyfile")
    consumer = scenario.start(env=env, bootstrap_servers=kafka_ssl_config["bootstrap_servers"])
    scenario.wait_lag_zero(240)
    assert consumer.terminate() == 0, scenario.tail()
    figures = scenario.ledger.figures("ssl/mtls", scenario.logs, None)
    assert (figures.lost, figures.duplicates, figures.stored) == (0, 0, 60)


def test_ssl_untrusted_client_or_server_fails_with_one_clear_error(
    stack, kafka_ssl_config, fleet_path, tmp_path
):
    cases = {
        # the broker requires a client certificate (ssl.client.auth=required)
        "no-client-cert": _ssl_env(kafka_ssl_config, "cafile"),
        # the system CA store did not sign the broker's certificate
        "no-ca": _ssl_env(kafka_ssl_config, "certfile", "keyfile"),
    }
    consumers = {
        name: ConsumerProcess(
            tmp_path / f"{name}.log",
            {**env_for(stack), **env},
            bootstrap_servers=kafka_ssl_config["bootstrap_servers"],
            topic="never-read",
            store=f"sqlite:///{tmp_path / name}.db",
            fleet=fleet_path,
            metrics_port=0,
        )
        for name, env in cases.items()
    }
    for name, consumer in consumers.items():
        # kafka-python gives up bootstrapping after 30 s; then the service must exit, not hang
        code = consumer.wait(150)
        log = consumer.logs()
        assert code == 3, f"{name}: exit {code}\n{log[-3000:]}"
        # only JSON log lines: no traceback of an uncaught exception on stderr
        lines = [json.loads(line) for line in log.strip().splitlines()]
        last = lines[-1]
        assert last["level"] == "CRITICAL", f"{name}: {last}"
        assert last["message"].startswith("cannot connect to Kafka at 127.0.0.1:"), last
        assert "over SSL" in last["message"] and "TAGFLEET_SSL_CERTFILE" in last["message"]
        # kafka-python's own lines say why the handshake failed
        expected = "CERTIFICATE_VERIFY_FAILED" if name == "no-ca" else "CERTIFICATE"
        assert any(
            line["logger"].startswith("kafka.") and expected in line["message"] for line in lines
        ), f"{name}:\n{log[-3000:]}"
