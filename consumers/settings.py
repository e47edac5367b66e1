"""The service's settings models, built once by the command line and passed down.

:class:`KafkaSettings`, :class:`StoreSettings` and :class:`TaggingSettings` are shared with the
commands that need the same values (``publish``, ``tag``, ``db upgrade``); :class:`Settings` is
the service's whole configuration. Values come, in increasing priority, from defaults,
``TAGFLEET_*`` environment variables and command-line flags (:mod:`models.options`). Kafka
security settings pass straight through to kafka-python; S3 endpoint, region and credentials
come from boto3's own chain (``AWS_ENDPOINT_URL_S3`` ...).
``python -m consumers.configuration`` prints the reference page kept in ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from consumers.cpus import (
    DECODE_MEMORY_SHARE,
    available_cpus,
    cgroup_memory_limit,
    decode_process_count,
)
from models import s3uri
from models.library_settings import EmbeddingStoreSettings
from models.options import NO_FLAG, CommaList
from models.settings import FleetFile, Runtime, Serving

# Settings that hold secrets: SecretStr (never in repr or logs), no command-line flag (a flag
# shows in the process list), and readable from a file named by TAGFLEET_<NAME>_FILE.
SECRET_SETTINGS = ("store", "sasl_plain_password")
# The file formats people upload to an asset library (see docs/configuration.md).
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class SecretFilesSource(PydanticBaseSettingsSource):
    """``TAGFLEET_<NAME>_FILE=/path`` sets secret setting NAME to the file's content (one
    trailing newline stripped), as Kubernetes and Docker mount secrets. A variable or a flag
    that sets NAME itself wins."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_SETTINGS:
            if name not in self.settings_cls.model_fields:
                continue
            path = os.environ.get(f"TAGFLEET_{name.upper()}_FILE")
            if path:
                try:
                    values[name] = Path(path).read_text().removesuffix("\n")
                except OSError as exc:
                    raise ValueError(
                        f"TAGFLEET_{name.upper()}_FILE={path}: cannot read it ({exc.strerror})"
                    ) from None
        return values


class TagfleetSettings(BaseSettings):
    """Base of the ``TAGFLEET_<NAME>`` settings models: frozen, secrets also from files."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_", frozen=True, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFilesSource(settings_cls))


class KafkaSettings(TagfleetSettings):
    """The Kafka cluster and the topic of asset events: the service, ``publish``."""

    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma separated."
    )
    topic: str = Field("assets", description="Topic of asset events (the upload lane).")
    backfill_topic: str | None = Field(
        None,
        description="Topic of the backfill lane: tagfleet publish writes there by default and"
        " the service serves it only with the capacity uploads leave (docs/operations.md,"
        " 'Priority lanes'). Unset: '<topic>.backfill'; '' (empty): no backfill lane.",
    )
    kafka_client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python",
        description="Kafka client of the service (its group consumer, result and dead-letter"
        " producers) and of publish: kafka-python (pinned, with its workarounds) or confluent"
        " (confluent-kafka, librdkafka); the same settings, delivery rules and metrics"
        ' (docs/reliability.md, "Two clients"). The dlq commands use kafka-python either way.',
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."
    )
    sasl_plain_username: str | None = Field(None, description="SASL username.")
    sasl_plain_password: SecretStr | None = Field(
        None,
        json_schema_extra=NO_FLAG,
        description="SASL password (never logged; environment or TAGFLEET_SASL_PLAIN_PASSWORD_FILE"
        " only, no flag).",
    )
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL.")
    ssl_certfile: str | None = Field(None, description="Client certificate for SSL.")
    ssl_keyfile: str | None = Field(None, description="Client key for SSL.")

    def backfill_lane(self) -> str | None:
        """The backfill lane's topic (None when there is none)."""
        if self.backfill_topic is None:
            return f"{self.topic}.backfill"
        return self.backfill_topic or None

    def input_topics(self) -> list[str]:
        """The topics the service subscribes to: the upload lane, then the backfill lane."""
        backfill = self.backfill_lane()
        return [self.topic] if backfill in (None, self.topic) else [self.topic, backfill]

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


class StoreSettings(TagfleetSettings):
    """The metadata store: the service, ``tag``, ``db upgrade``."""

    store: SecretStr = Field(
        SecretStr("sqlite:///tags.db"),
        description="SQLAlchemy URL of the metadata store (never logged; a URL with a password"
        " only from the environment or TAGFLEET_STORE_FILE, not the --store flag).",
    )

    @field_validator("store", mode="after")
    @classmethod
    def _store_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if not url:
            raise ValueError("the store URL is empty")
        if not _URL.match(url):
            raise ValueError(
                "not a SQLAlchemy URL: give dialect[+driver]://..., e.g. sqlite:///tags.db or"
                " postgresql+psycopg://user@host/db"
            )
        return value

    def store_url(self) -> str:
        """The store's SQLAlchemy URL, password included (never log it)."""
        return self.store.get_secret_value()


class DlqSettings(TagfleetSettings):
    """The dead-letter topic: the service writes it, ``dlq list`` and ``dlq redrive`` read it."""

    dlq_topic: str = Field("assets.dlq", description="Dead-letter topic.")


class TaggingSettings(TagfleetSettings):
    """What tagging one image may cost and how it is retried: the service and ``tag`` alike."""

    migrate_on_start: bool = Field(True, description="Run store migrations at start-up.")
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
    decode_backend: Literal["pillow", "nvimgcodec"] = Field(
        "pillow",
        description="Image decoder: pillow (on the CPU), or nvimgcodec (NVIDIA nvImageCodec,"
        " pip install '.[gpu-decode]': JPEGs decoded and resized on the models' CUDA device and"
        " handed to the backbone there; its CPU backend without CUDA). nvimgcodec decodes in"
        " threads of the service process (decode_mode is then ignored) and hands what it"
        " refuses, and every non-JPEG, to Pillow; limits are checked from the headers first"
        " either way.",
    )
    decode_timeout_s: float = Field(
        60.0, gt=0, description="Process mode: longest decode of one image before it is killed."
    )
    decode_memory_bytes: int = Field(
        1_500_000_000,
        ge=200_000_000,
        description="Process mode: address-space limit (RLIMIT_AS) of each decode process; an"
        " image that needs more is dead-lettered (image_too_large) and costs that image only.",
    )
    memory_limit_bytes: int = Field(
        0,
        ge=0,
        description="Memory this pod may use (the chart sets it from limits.memory; 0 = the"
        " cgroup's memory.max). Decode processes get at most half of it.",
    )
    cpu_limit_millicores: int = Field(
        0,
        ge=0,
        description="CPUs this pod may use, in millicores (the chart sets it from limits.cpu;"
        " 0 = the affinity mask and the cgroup's cpu.max).",
    )
    max_inference_failures: int = Field(
        8, ge=1, description="Consecutive failed images after which the service stops (bad deploy)."
    )
    retry_max_attempts: int = Field(
        12,
        ge=1,
        description="Attempts of one image's fetch or decode after transient faults; past it and"
        " retry_budget_s it is dead-lettered (retries_exhausted), unless nothing at all succeeded"
        " meanwhile (an outage, retried until it passes).",
    )
    retry_budget_s: float = Field(
        600.0, gt=0, description="Shortest time one image is retried before retries_exhausted."
    )
    max_raw_bytes_in_flight: int = Field(
        256_000_000,
        ge=1,
        description="Fetched object bytes held in memory awaiting decode; fetches wait beyond it.",
    )
    max_object_bytes: int = Field(50_000_000, ge=1, description="Largest object fetched.")
    max_pixels: int = Field(
        100_000_000, ge=1, description="Largest decoded image (width x height)."
    )
    max_decode_bytes: int = Field(
        512_000_000,
        ge=1,
        description="Largest decoded pixel buffer (width x height x bytes per pixel of the"
        " decoded mode, after JPEG draft scaling; plus the tiles when a function is read in"
        " tiles), checked from the header before decoding.",
    )
    max_tiles: int = Field(
        64,
        ge=1,
        le=1024,
        description="Most tiles cut from one image for a function read in tiles (its manifest's"
        " tiling); a larger image is cut into fewer, larger tiles. Each tile is the model input"
        " (224 x 224 x 3 bytes for ViT-B-32: 64 tiles hold 9.6 MB).",
    )
    image_formats: CommaList = Field(
        DEFAULT_FORMATS,
        description="Pillow formats accepted; TIFF and BMP are off unless added here"
        " (docs/configuration.md says why).",
    )

    @field_validator("image_formats", mode="after")
    @classmethod
    def _known_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from PIL import Image

        Image.init()
        wrong = [name for name in value if name not in Image.OPEN]
        if wrong:
            raise ValueError(
                f"not image formats Pillow reads: {', '.join(wrong)} (e.g. JPEG,PNG,WEBP,GIF,TIFF)"
            )
        return value

    def cpus(self) -> int:
        """CPUs this process may use: :func:`available_cpus`, capped by ``cpu_limit_millicores``."""
        cpus = available_cpus()
        if self.cpu_limit_millicores:
            cpus = min(cpus, max(1, -(-self.cpu_limit_millicores // 1000)))
        return cpus

    def decode_parallelism(self) -> int:
        """``decode_workers``, or as many decode processes as the CPUs and the memory this pod
        may use allow (:func:`decode_process_count`) when it is 0."""
        if self.decode_workers:
            return self.decode_workers
        if self.decode_mode == "thread":
            return self.cpus()
        return decode_process_count(
            self.cpus(), self.decode_process_memory(), self.memory_limit_bytes or None
        )

    def decode_process_memory(self) -> int:
        """Each decode process's address-space limit: ``decode_memory_bytes``, lowered to the
        decode share of a pod too small for it (a 2 GiB pod gets 1 GiB, not 1.5 GB), never
        under 256 MB."""
        limit = self.memory_limit_bytes or cgroup_memory_limit()
        if not limit:
            return self.decode_memory_bytes
        share = int(limit * DECODE_MEMORY_SHARE)
        return min(self.decode_memory_bytes, max(256_000_000, share))


class EmbeddingSettings(TagfleetSettings, EmbeddingStoreSettings):
    """What the service and `tag` keep beyond tags, and reuse instead of inferring again.

    Each image's pooled embeddings go to the embedding store at ``embeddings``
    (:class:`EmbeddingStoreSettings`); results are reused for the same bytes (content-hash
    dedup)."""

    store_embeddings: bool = Field(
        True,
        description="Keep each tagged image's pooled embedding per backbone in the embedding"
        " store (--embeddings), for training, applying and searching without the images.",
    )
    reuse_results: bool = Field(
        True,
        description="Reuse the results of an image with the same bytes (SHA-256) and the same"
        " function versions instead of running the model again (tagfleet_inference_reused).",
    )

    def embedding_location(self) -> str | None:
        """Where to keep embeddings; ``None`` when they are not kept."""
        return self.embeddings if self.store_embeddings and self.embeddings else None


class ReviewSettings(TagfleetSettings):
    """The review queue the service fills (docs/review.md): which predictions it flags, how
    many it queues, where it streams them."""

    review: bool = Field(
        False,
        description="Flag predictions worth a person's look into the review table and topic.",
    )
    review_topic: str = Field(
        "asset-reviews", description="Topic of review items ('' keeps them in the table only)."
    )
    review_format: Literal["json", "label-studio"] = Field(
        "json",
        description="Review topic records: our JSON (docs/review.md) or Label Studio's task"
        " import form.",
    )
    review_margin: float = Field(
        0.1, ge=0, le=1, description="classify: flag when best minus second-best score is below."
    )
    review_band: float = Field(
        0.05, ge=0, le=1, description="tags: flag a label scored within this of its threshold."
    )
    review_spot_rate: float = Field(
        0.0, ge=0, le=1, description="Share of confident predictions queued for spot checks."
    )
    review_max_per_label_hour: int = Field(
        20, ge=0, description="Items queued per function and label in any hour, at most."
    )
    review_max_per_hour: int = Field(500, ge=0, description="Items queued in any hour, at most.")


class Settings(
    KafkaSettings,
    DlqSettings,
    StoreSettings,
    FleetFile,
    Runtime,
    Serving,
    TaggingSettings,
    EmbeddingSettings,
    ReviewSettings,
):
    """The service (``tagfleet consume``): the shared models above and its own settings."""

    model_config = SettingsConfigDict(env_prefix="TAGFLEET_", frozen=True, extra="ignore")

    # Kafka consumer
    group_id: str = Field("tagfleet", description="Consumer group id.")
    results_topic: str = Field("asset-tags", description="Topic of result events ('' disables).")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts; 'earliest' so no backlog is skipped."
    )
    max_poll_records: int = Field(256, ge=1, description="Records per poll() call.")
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="kafka-python max_poll_interval_ms."
    )
    session_timeout_ms: int = Field(10_000, ge=1000, description="Group session timeout.")
    assignment_strategy: Literal["range", "roundrobin"] = Field(
        "range",
        description="Partition assignment strategy (eager; cooperative-sticky is not supported:"
        " docs/reliability.md).",
    )
    group_instance_id: str | None = Field(
        None,
        description="Static group membership (KIP-345): this member's id, unique in the group"
        " (the chart's staticMembership sets the pod name). Restarted within"
        " session_timeout_ms it keeps its partitions without a rebalance; stopped, it holds"
        " them until its session expires (no leave).",
    )

    # Pipeline
    fleet_poll_s: float = Field(
        5.0,
        ge=0,
        description="How often the service looks at its fleet file (a local file's mtime, an"
        " s3:// object's ETag) for a change to load, check and swap in between two batches;"
        " 0: never (docs/lifecycle.md).",
    )
    batch_size: int = Field(32, ge=1, description="Largest inference batch.")
    batch_wait_ms: int = Field(
        20, ge=0, description="Longest wait to fill a batch once one image is ready."
    )
    fetch_workers: int = Field(16, ge=1, description="Parallel S3 GETs (and connection pool size).")
    max_in_flight: int = Field(
        512, ge=1, description="Messages between poll and commit before partitions pause."
    )
    backfill_max_in_flight: int = Field(
        4,
        ge=1,
        description="Backfill-lane messages between poll and completion, at most: an upload"
        " waits behind no more than these in the stages.",
    )
    backfill_min_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="While uploads are busy, backfill still gets this share of the messages"
        " taken (of the last 100), so it never starves; 0: none until uploads are quiet.",
    )
    backfill_quiet_ms: int = Field(
        500,
        ge=0,
        description="Uploads count as busy until none has been taken for this long (and none"
        " is in flight); then backfill takes the room backfill_max_in_flight leaves.",
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
    partition_stall_s: float = Field(
        60.0,
        gt=0,
        description="An assigned partition with records waiting that no poll has returned for"
        " this long (the loop unpaused; paused for backpressure does not count) is stalled:"
        " tagfleet_stalled_partitions and its alert.",
    )
    liveness_stall_s: float = Field(
        300.0,
        gt=0,
        description="/healthz fails when a partition has been stalled this long, or when"
        " partitions have had lag and no work completed for this long (a store outage that"
        " long included). Keep it above rejoin_stuck_s: the service first tries a new"
        " consumer.",
    )
    max_inference_s: float = Field(
        300.0,
        gt=0,
        description="/healthz fails when one inference batch has been in the model this long"
        " (a hung GPU or driver); keep it well above the slowest batch.",
    )

    # Limits and safety
    max_event_bytes: int = Field(1_000_000, ge=1, description="Largest event value accepted.")
    max_records_per_event: int = Field(
        100,
        ge=1,
        description="Records of one S3 notification; more is one dead letter (too_many_records).",
    )
    asset_id_binding: Literal["uri", "any"] = Field(
        "uri",
        description="'uri': a native event's asset_id must be its uri, so no producer can write"
        " tags onto another object's asset; 'any': any id (producers trusted, e.g. a DAM's ids).",
    )
    dlq_reveal_missing: bool = Field(
        False,
        description="Dead-letter missing and forbidden objects as object_not_found and"
        " access_denied; off: both are object_unavailable, so a sender cannot probe which"
        " objects exist (the service's log always has the precise cause).",
    )
    allowed_buckets: CommaList = Field(
        (), description="Bucket allow-list (empty: any bucket the role can read)."
    )

    # Service
    metrics_host: str = Field("0.0.0.0", description="Bind address of /metrics, /healthz, /readyz.")  # noqa: S104
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the metrics server (0 = off)."
    )
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log format.")

    @field_validator("allowed_buckets", mode="after")
    @classmethod
    def _bucket_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [name for name in value if not s3uri.is_bucket_name(name)]
        if wrong:
            raise ValueError(f"not S3 bucket names: {', '.join(wrong)}")
        return value
