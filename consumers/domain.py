"""Typed payloads shared by every stage of the pipeline.

Pure data: no I/O here. Stages raise :class:`PermanentError` for input that will never succeed
(it is dead-lettered once, with its reason code) and :class:`TransientError` for faults that
may pass (retried with backoff, never dead-lettered).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Stable dead-letter reason codes (the ``tagfleet-reason`` header)."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    EVENT_TOO_LARGE = "event_too_large"
    UNSUPPORTED_URI = "unsupported_uri"
    BUCKET_NOT_ALLOWED = "bucket_not_allowed"
    UNKNOWN_FUNCTION = "unknown_function"
    OBJECT_NOT_FOUND = "object_not_found"
    ACCESS_DENIED = "access_denied"
    OBJECT_TOO_LARGE = "object_too_large"
    EMPTY_OBJECT = "empty_object"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_DECODE_FAILED = "image_decode_failed"
    INFERENCE_FAILED = "inference_failed"
    TOO_MANY_RECORDS = "too_many_records"
    OBJECT_UNAVAILABLE = "object_unavailable"
    FETCH_REJECTED = "fetch_rejected"
    STORE_REJECTED = "store_rejected"
    PUBLISH_REJECTED = "publish_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    MULTIPLE = "multiple"


class PermanentError(Exception):
    """Input that will never succeed: dead-letter it once with ``reason``.

    ``headers`` are extra dead-letter headers (name, UTF-8 bytes), e.g. the per-record
    reasons of a message dead-lettered once for several failed records.
    """

    def __init__(
        self, reason: Reason, message: str, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.headers = headers or []


class TransientError(Exception):
    """A fault that may pass (S3 5xx, timeouts, database or broker down): retry, never DLQ."""


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a message came from; the provenance stored with every tag."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class AssetRequest:
    """A validated request to tag one object (native event or S3 ``ObjectCreated``)."""

    asset_id: str
    uri: str
    bucket: str
    key: str
    functions: tuple[str, ...] | None = None
    tenant: str | None = None
    etag: str | None = None
    content_type: str | None = None
    event_time: datetime | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    alternative_key: str | None = None  # the key's other reading (consumers.object_keys)
    sequencer: str | None = None  # order key among this object's events (consumers.sequencer)

    def with_key(self, key: str) -> AssetRequest:
        """This request for the same bucket's object ``key`` (its other reading)."""
        uri = f"s3://{self.bucket}/{key}"
        return replace(self, key=key, uri=uri, asset_id=uri, alternative_key=None)


@dataclass(frozen=True, slots=True)
class AssetRemoval:
    """An S3 ``ObjectRemoved`` notification: the asset loses its tags (once the object is
    confirmed gone: ``bucket`` and ``key`` say where to look)."""

    asset_id: str
    uri: str
    event_time: datetime | None = None
    bucket: str = ""
    key: str = ""
    alternative_key: str | None = None  # the key's other reading (consumers.object_keys)
    sequencer: str | None = None  # order key among this object's events (consumers.sequencer)

    def with_key(self, key: str, alternative_key: str | None = None) -> AssetRemoval:
        """This removal for the same bucket's object ``key`` (its other reading)."""
        uri = f"s3://{self.bucket}/{key}"
        return replace(self, key=key, uri=uri, asset_id=uri, alternative_key=alternative_key)


@dataclass(frozen=True, slots=True)
class AssetResult:
    """Everything the sinks need for one tagged asset.

    ``functions`` maps a function name to its result object exactly as in the result-event
    contract (``type``, ``version``, then ``label``/``score``/``scores``, ``tags``/``scores`` or
    ``objects``), plus ``thresholds`` (label -> threshold) for tags functions.
    """

    asset_id: str
    uri: str
    etag: str | None
    width: int
    height: int
    functions: dict[str, dict[str, Any]]
    source: SourcePosition | None
    processed_at: datetime
    latency_ms: float | None = None
    # shadow candidates' result objects by function name: stored apart, never published
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    sequencer: str | None = None  # order key of the event (consumers.sequencer); None: unordered
    tenant: str | None = None  # the event's tenant (None: the store's default tenant)
    content_hash: str | None = None  # SHA-256 (hex) of the bytes tagged (content-hash dedup)
    # backbone key -> the image's pooled embedding (a float32 numpy vector), for the
    # embedding store; empty for a result reused from another asset of the same bytes
    embeddings: dict[str, Any] = field(default_factory=dict)
    reused_from: str | None = None  # the asset whose stored results were reused: no inference
