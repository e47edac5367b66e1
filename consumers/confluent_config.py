"""The settings of :meth:`KafkaSettings.kafka_common` under librdkafka's names.

One source for both clients: the service's Kafka settings are read once, as kafka-python
keyword arguments, and this module renames them for confluent-kafka (librdkafka). Pure: it
imports no client, so the consumer and the producer adapters share it without knowing each
other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# kafka-python keyword (kafka_common) -> librdkafka property
_NAMES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",  # noqa: S105 - a property name, not a password
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


def librdkafka_config(common: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka's properties for ``common`` (:meth:`KafkaSettings.kafka_common`'s output).

    Raises ``ValueError`` on a key it cannot map, so a setting added to ``kafka_common`` later
    is never silently dropped for this client. Hostname verification stays librdkafka's
    default (``ssl.endpoint.identification.algorithm=https``), as kafka-python's
    ``ssl_check_hostname`` does.
    """
    config: dict[str, Any] = {}
    for name, value in common.items():
        if name == "bootstrap_servers":
            servers = value if isinstance(value, str) else ",".join(value)
            config["bootstrap.servers"] = servers
        elif name in _NAMES:
            if value is not None:
                config[_NAMES[name]] = value
        else:
            raise ValueError(f"no librdkafka property for the Kafka setting {name!r}")
    return config
