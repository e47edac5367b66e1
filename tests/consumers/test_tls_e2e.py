"""Issue 13 item 7: the service over the broker's SSL listener (mutual TLS, the certificates
``infra/kafka.sh`` made: the broker's names 127.0.0.1 and localhost) with hostname
verification on, and a broker it must not trust refused at start with one clear line and exit
code 3, whether the CA is wrong or the certificate does not name the host."""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

import pytest
from harness import (
    ConsumerProcess,
    env_for,
    free_port,
    native_event,
    upload_images,
    wait_until,
)
from kafka import KafkaProducer

from consumers.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _ssl_env(config: dict[str, Any], **override: str) -> dict[str, str]:
    env = {
        "TAGFLEET_SECURITY_PROTOCOL": "SSL",
        "TAGFLEET_SSL_CAFILE": config["ssl_cafile"],
        "TAGFLEET_SSL_CERTFILE": config["ssl_certfile"],
        "TAGFLEET_SSL_KEYFILE": config["ssl_keyfile"],
    }
    env.update({f"TAGFLEET_SSL_{k.upper()}": v for k, v in override.items()})
    return env


def _stored(consumer: ConsumerProcess) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = consumer.get("/metrics")
    if status != 200:
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tagfleet_events_total" and sample.labels == {"outcome": "stored"}:
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_consuming_over_the_ssl_listener_checks_the_broker_hostname(
    client, stack, kafka_ssl_config, new_topic, new_bucket, s3, sqlite_url, fleet_path, tmp_path
):
    port = kafka_ssl_config["bootstrap_servers"].rsplit(":", 1)[1]
    bootstrap = f"localhost:{port}"  # a DNS name of the broker's certificate
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        security_protocol="SSL",
        ssl_cafile=kafka_ssl_config["ssl_cafile"],
    )
    # hostname verification stays kafka-python's default (on): nothing turns it off; librdkafka's
    # default (ssl.endpoint.identification.algorithm=https) is on too
    assert settings.kafka_common().get("ssl_check_hostname", True) is True
    bucket = new_bucket()
    keys = upload_images(s3, bucket, 30)
    topic = new_topic(partitions=2)
    producer = KafkaProducer(**{**kafka_ssl_config, "bootstrap_servers": bootstrap}, acks="all")
    for key in keys:
        k, v = native_event(bucket, key)
        producer.send(topic, key=k, value=v)
    producer.flush(30)
    producer.close()
    consumer = ConsumerProcess(
        tmp_path / "tls.log",
        {**env_for(stack), **_ssl_env(kafka_ssl_config)},
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        results_topic="",
        dlq_topic=f"{topic}.dlq",
        store=sqlite_url,
        fleet=fleet_path,
        metrics_port=free_port(),
        kafka_client=client,
    )
    try:
        wait_until(lambda: _stored(consumer) == 30, 240, what="30 stored over SSL")
    finally:
        code = consumer.terminate()
    assert code == 0, consumer.logs()[-3000:]


def _a_name_of_this_host_not_in_the_certificate() -> str | None:
    """A host name that reaches the broker (127.0.0.1) but is not in its certificate."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return None
    return name if address == "127.0.0.1" and name != "localhost" else None


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
@pytest.mark.parametrize("case", ["wrong-ca", "host-not-in-certificate"])
def test_a_broker_not_to_trust_fails_at_start_with_one_clear_line_and_exit_3(
    case, client, stack, kafka_ssl_config, fleet_path, tmp_path
):
    host, port = kafka_ssl_config["bootstrap_servers"].rsplit(":", 1)
    env = _ssl_env(kafka_ssl_config)
    if case == "wrong-ca":
        other_ca = tmp_path / "other-ca.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-subj", "/CN=another CA", "-keyout", str(tmp_path / "other-ca.key")]
            + ["-out", str(other_ca)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        env = _ssl_env(kafka_ssl_config, cafile=str(other_ca))
        cause = "unable to get local issuer certificate"
    else:
        name = _a_name_of_this_host_not_in_the_certificate()
        if name is None:
            pytest.skip("this host has no name for 127.0.0.1 besides localhost")
        host = name
        cause = f"Hostname mismatch, certificate is not valid for '{name}'"
    consumer = ConsumerProcess(
        tmp_path / f"{case}.log",
        {**env_for(stack), **env},
        bootstrap_servers=f"{host}:{port}",
        topic="never-read",
        store=f"sqlite:///{tmp_path / case}.db",
        fleet=fleet_path,
        metrics_port=0,
        kafka_client=client,
    )
    code = consumer.wait(150)  # either client gives up bootstrapping after 30 s
    log = consumer.logs()
    assert code == 3, f"exit {code}\n{log[-3000:]}"
    lines = [json.loads(line) for line in log.strip().splitlines()]  # no traceback
    critical = [line for line in lines if line["level"] == "CRITICAL"]
    assert critical == [lines[-1]], critical  # one line, the last one
    message = critical[0]["message"]
    assert message.startswith(f"cannot connect to Kafka at {host}:{port} over SSL"), message
    assert cause in message and "TAGFLEET_SSL_CAFILE" in message, message
    assert "\n" not in message
