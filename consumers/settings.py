"""The one frozen settings object, built in the entry point and passed down.

Values come, in increasing priority, from defaults, ``TAGFLEET_*`` environment variables and
command-line flags. Kafka security settings pass straight through to kafka-python; S3
endpoint, region and credentials come from boto3's own chain (``AWS_ENDPOINT_URL_S3`` ...).
``python -m consumers.settings`` prints the reference page kept in ``docs/configuration.md``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from consumers.cpus import available_cpus


class Settings(BaseSettings):
    """tagfleet service configuration (``TAGFLEET_<NAME>`` or ``--<name>``)."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_", frozen=True, extra="ignore")

    # Kafka
    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma separated."
    )
    topic: str = Field("assets", description="Topic of asset events.")
    group_id: str = Field("tagfleet", description="Consumer group id.")
    results_topic: str = Field("asset-tags", description="Topic of result events ('' disables).")
    dlq_topic: str = Field("assets.dlq", description="Dead-letter topic.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts; 'earliest' so no backlog is skipped."
    )
    max_poll_records: int = Field(256, ge=1, description="Records per poll() call.")
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="kafka-python max_poll_interval_ms."
    )
    session_timeout_ms: int = Field(10_000, ge=1000, description="Group session timeout.")
    assignment_strategy: Literal["range", "roundrobin", "cooperative-sticky"] = Field(
        "range", description="Partition assignment strategy."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."
    )
    sasl_plain_username: str | None = Field(None, description="SASL username.")
    sasl_plain_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL.")
    ssl_certfile: str | None = Field(None, description="Client certificate for SSL.")
    ssl_keyfile: str | None = Field(None, description="Client key for SSL.")

    # Fleet and store
    fleet: str = Field("fleet.yaml", description="Path or s3:// URI of fleet.yaml.")
    store: str = Field("sqlite:///tags.db", description="SQLAlchemy URL of the metadata store.")
    migrate_on_start: bool = Field(True, description="Run store migrations at start-up.")

    # Pipeline
    batch_size: int = Field(32, ge=1, description="Largest inference batch.")
    batch_wait_ms: int = Field(
        20, ge=0, description="Longest wait to fill a batch once one image is ready."
    )
    fetch_workers: int = Field(16, ge=1, description="Parallel S3 GETs (and connection pool size).")
    decode_workers: int = Field(
        0,
        ge=0,
        description="Parallel decodes: processes or threads (0 = the CPUs this process may use,"
        " capped by a cgroup CPU limit).",
    )
    decode_mode: Literal["process", "thread"] = Field(
        "process",
        description="Decode in child processes (parallel without the GIL; a decoder that crashes"
        " or hangs costs one image) or in threads of the service process.",
    )
    decode_timeout_s: float = Field(
        60.0, gt=0, description="Process mode: longest decode of one image before it is killed."
    )
    max_in_flight: int = Field(
        512, ge=1, description="Messages between poll and commit before partitions pause."
    )
    drain_timeout_s: float = Field(
        25.0, ge=0, description="On SIGTERM, longest wait for in-flight work."
    )
    commit_interval_ms: int = Field(
        500, ge=0, description="Shortest interval between offset commits."
    )
    rejoin_stuck_s: float = Field(
        120.0,
        ge=1,
        description="A group (re)join, or a backlog of unpaused partitions not fetched, lasting"
        " longer than this re-creates the consumer.",
    )
    max_inference_failures: int = Field(
        8, ge=1, description="Consecutive failed images after which the service stops (bad deploy)."
    )

    # Limits and safety
    max_event_bytes: int = Field(1_000_000, ge=1, description="Largest event value accepted.")
    max_object_bytes: int = Field(50_000_000, ge=1, description="Largest object fetched.")
    max_pixels: int = Field(
        100_000_000, ge=1, description="Largest decoded image (width x height)."
    )
    allowed_buckets: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Bucket allow-list (empty: any bucket)."
    )
    image_formats: Annotated[tuple[str, ...], NoDecode] = Field(
        ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"), description="Pillow formats accepted."
    )

    # Service
    metrics_host: str = Field("0.0.0.0", description="Bind address of /metrics, /healthz, /readyz.")  # noqa: S104
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the metrics server (0 = off)."
    )
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log format.")

    @field_validator("allowed_buckets", "image_formats", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    def decode_parallelism(self) -> int:
        """``decode_workers``, or the CPUs this process may use when it is 0."""
        return self.decode_workers or available_cpus()

    def kafka_common(self) -> dict[str, Any]:
        """kafka-python keyword arguments shared by consumers, producers and admin clients."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                cfg["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                cfg[name] = getattr(self, name)
        return cfg


def reference_markdown() -> str:
    """The configuration reference page, generated from :class:`Settings`."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m consumers.settings`; do not edit by hand.",
        "Every setting is an environment variable `TAGFLEET_<NAME>` and a flag `--<name>`",
        "(flags win). S3 endpoint, region and credentials come from boto3's standard chain",
        "(`AWS_ENDPOINT_URL_S3`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, instance roles ...).",
        "",
        "| environment variable | flag | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        flag = "--" + name.replace("_", "-")
        lines.append(
            f"| `TAGFLEET_{name.upper()}` | `{flag}` | `{default}` | {field.description or ''} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
