"""Asset events: the two input forms, validated, turned into domain requests.

Pure: no I/O. :func:`parse_event` is the only entry point the pipeline needs; the pydantic
models are public so that ``docs/event.schema.json`` is generated from them
(``python -m consumers.events > docs/event.schema.json``).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from consumers.domain import AssetRemoval, AssetRequest, PermanentError, Reason
from consumers.object_keys import from_versitygw, key_readings
from consumers.safe_text import MAX_ID_BYTES, MAX_SHORT_BYTES, key_problem, text_problem
from consumers.sequencer import order_key
from models import s3uri


def _limited(max_bytes: int) -> AfterValidator:
    def check(value: str) -> str:
        problem = text_problem(value, max_bytes)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


# max_length (characters) is for the published schema; the byte limit is the one enforced.
NonEmpty = Annotated[str, Field(min_length=1, max_length=MAX_ID_BYTES), _limited(MAX_ID_BYTES)]
Short = Annotated[str, Field(min_length=1, max_length=MAX_SHORT_BYTES), _limited(MAX_SHORT_BYTES)]
OptionalShort = Annotated[str, Field(max_length=MAX_SHORT_BYTES), _limited(MAX_SHORT_BYTES)]
# URL-encoded keys may be three times their decoded size; the decoded key is checked after.
EncodedKey = Annotated[str, Field(min_length=1, max_length=4 * MAX_ID_BYTES)]
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_M = TypeVar("_M", bound=BaseModel)
_CREATED = "ObjectCreated:"
# Families of S3 (AWS, MinIO, VersityGW) event names that are not objects to tag or remove.
IGNORED_KINDS = frozenset(
    {
        "TestEvent",
        "ObjectAccessed",
        "ObjectRestore",
        "Replication",
        "LifecycleTransition",
        "IntelligentTiering",
        "ObjectTagging",
        "ObjectAcl",
        "ReducedRedundancyLostObject",
        "Scanner",
        "other",
    }
)
_REMOVED = ("ObjectRemoved:", "LifecycleExpiration:")


@dataclass(frozen=True, slots=True)
class EventPolicy:
    """What an event may ask for. The defaults are the consume-mode rules of DESIGN.md."""

    max_event_bytes: int = 1_000_000
    allowed_schemes: frozenset[str] = frozenset({"s3"})
    allowed_buckets: frozenset[str] | None = None
    max_records: int = 100
    asset_id_binding: Literal["uri", "any"] = "uri"

    def __post_init__(self) -> None:
        unknown = set(self.allowed_schemes) - {"s3"}
        if unknown:
            raise ValueError(f"unsupported URI schemes {sorted(unknown)}: only 's3' is fetchable")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class NativeEvent(_Strict):
    """The native form: one asset to tag."""

    model_config = ConfigDict(title="NativeEvent")

    asset_id: NonEmpty = Field(description="Stable id of the asset; the message key when keyed.")
    uri: NonEmpty = Field(description="s3://bucket/key (the key literally, not URL-encoded).")
    functions: list[Short] | None = Field(
        default=None, min_length=1, description="Function names to run; default: every one."
    )
    tenant: OptionalShort | None = None
    etag: OptionalShort | None = None
    content_type: OptionalShort | None = None
    event_time: AwareDatetime | None = Field(default=None, description="RFC 3339 with offset.")
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="Passed through unchanged to the result event."
    )


class S3Bucket(_Strict):
    name: Short
    arn: EncodedKey | None = None


class S3Object(_Strict):
    key: EncodedKey = Field(description="URL-encoded object key ('+' for space).")
    size: int | None = Field(default=None, ge=0)
    eTag: OptionalShort | None = None
    contentType: OptionalShort | None = None
    sequencer: str | None = Field(
        default=None,
        max_length=MAX_SHORT_BYTES,
        description="Hex; orders the events of one object (docs/events.md, order per object).",
    )


class S3Entity(_Strict):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Strict):
    eventName: Short = Field(
        description="e.g. ObjectCreated:Put (AWS) or s3:ObjectCreated:Put (MinIO)."
    )
    eventTime: AwareDatetime | None = None
    userIdentity: dict[str, Any] | None = None
    s3: S3Entity


class S3Notification(_Strict):
    """An S3 event notification as AWS and MinIO publish it (MinIO adds EventName and Key)."""

    model_config = ConfigDict(title="S3Notification")

    Records: list[S3Record] = Field(min_length=1)
    EventName: OptionalShort | None = None
    Key: str | None = None


AssetEvent = NativeEvent | S3Notification
_NATIVE = TypeAdapter(NativeEvent)
_NOTIFICATION = TypeAdapter(S3Notification)


def parse_event(
    value: bytes | None,
    key: bytes | None,
    policy: EventPolicy,
    on_ignored: Callable[[str], None] | None = None,
) -> list[AssetRequest | AssetRemoval]:
    """Validate one message value and return what it asks for, in record order.

    A native event gives one :class:`AssetRequest`; a notification gives one request or removal
    per ``ObjectCreated``/``ObjectRemoved`` record and ignores other event names (``[]`` for a
    notification with none, such as ``s3:TestEvent`` or ``ObjectAccessed``), and calls
    ``on_ignored(kind)`` once per record (or test event) it ignores, ``kind`` one of
    :data:`IGNORED_KINDS` (a bounded set: event names are the sender's). When ``key`` is set
    on a native event it must equal ``asset_id``; a notification's key is not checked (MinIO keys
    by ``bucket/key``).

    Every text field is checked for what S3 and the store would refuse (control characters,
    lone surrogates, UTF-8 byte lengths: :mod:`consumers.safe_text`), so such an event is one
    dead letter here rather than an error in a later stage. With ``policy.asset_id_binding``
    ``"uri"`` a native event's ``asset_id`` must be its ``uri``: a producer cannot write tags
    onto another object's asset.

    Raises :class:`PermanentError` with ``event_too_large`` (over ``policy.max_event_bytes``,
    before parsing), ``invalid_json`` (not UTF-8 JSON), ``too_many_records`` (a notification
    over ``policy.max_records``), ``invalid_event`` (tombstone, schema violation, text limits,
    key mismatch, unbound asset id), ``unsupported_uri`` or ``bucket_not_allowed``.
    """
    if value is None:
        raise PermanentError(Reason.INVALID_EVENT, "message has no value (tombstone)")
    if len(value) > policy.max_event_bytes:
        raise PermanentError(
            Reason.EVENT_TOO_LARGE,
            f"event is {len(value)} bytes, over the limit of {policy.max_event_bytes}",
        )
    document = _load_json(value)
    if not isinstance(document, dict):
        raise PermanentError(Reason.INVALID_EVENT, "event must be a JSON object")
    if "Records" in document:
        records = document["Records"]
        if isinstance(records, list) and len(records) > policy.max_records:
            raise PermanentError(
                Reason.TOO_MANY_RECORDS,
                f"notification has {len(records)} records, over the limit of"
                f" {policy.max_records} (TAGFLEET_MAX_RECORDS_PER_EVENT)",
            )
        return _from_notification(_validate(_NOTIFICATION, value), policy, on_ignored)
    if document.get("Event") == "s3:TestEvent":
        if on_ignored is not None:
            on_ignored("TestEvent")
        return []
    return [_from_native(_validate(_NATIVE, value), key, policy)]


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of both event forms, as committed in ``docs/event.schema.json``."""
    schema = TypeAdapter(AssetEvent).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tagfleet.dev/schemas/event.schema.json",
        "title": "tagfleet asset event",
        "description": "A native event or an S3 (AWS or MinIO) event notification.",
        **schema,
    }


def _load_json(value: bytes) -> Any:
    try:
        return json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PermanentError(Reason.INVALID_JSON, f"value is not UTF-8: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PermanentError(Reason.INVALID_JSON, f"value is not JSON: {exc}") from None


def _validate(adapter: TypeAdapter[_M], value: bytes) -> _M:
    try:
        return adapter.validate_json(value)
    except ValidationError as exc:
        raise PermanentError(Reason.INVALID_EVENT, _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '(event)'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _from_native(event: NativeEvent, key: bytes | None, policy: EventPolicy) -> AssetRequest:
    if key is not None and key.decode("utf-8", errors="replace") != event.asset_id:
        raise PermanentError(Reason.INVALID_EVENT, "asset_id: does not match the message key")
    bucket, object_key = split_s3_uri(event.uri, policy)
    if policy.asset_id_binding == "uri" and event.asset_id != event.uri:
        raise PermanentError(
            Reason.INVALID_EVENT,
            "asset_id: must equal uri (ids are bound to their object; an operator whose"
            " producers are trusted may set TAGFLEET_ASSET_ID_BINDING=any)",
        )
    return AssetRequest(
        asset_id=event.asset_id,
        uri=event.uri,
        bucket=bucket,
        key=object_key,
        functions=tuple(event.functions) if event.functions is not None else None,
        tenant=event.tenant,
        etag=event.etag,
        content_type=event.content_type,
        event_time=event.event_time,
        attributes=dict(event.attributes),
    )


def _from_notification(
    notification: S3Notification,
    policy: EventPolicy,
    on_ignored: Callable[[str], None] | None = None,
) -> list[AssetRequest | AssetRemoval]:
    out: list[AssetRequest | AssetRemoval] = []
    for record in notification.Records:
        name = record.eventName.removeprefix("s3:")
        if not name.startswith((_CREATED, *_REMOVED)):
            if on_ignored is not None:
                on_ignored(ignored_kind(name))
            continue
        raw = from_versitygw(record.userIdentity, record.s3.bucket.arn)
        order = order_key(record.s3.object.sequencer, versitygw=raw, event_time=record.eventTime)
        first, other = key_readings(record.s3.object.key, raw)
        uri = f"s3://{record.s3.bucket.name}/{first}"
        bucket, object_key = split_s3_uri(uri, policy)
        alternative = None
        if other is not None:
            try:
                alternative = split_s3_uri(f"s3://{bucket}/{other}", policy)[1]
            except PermanentError:
                alternative = None  # a reading S3 could not serve anyway
        if name.startswith(_CREATED):
            etag = record.s3.object.eTag
            out.append(
                AssetRequest(
                    asset_id=uri,
                    uri=uri,
                    bucket=bucket,
                    key=object_key,
                    etag=etag.strip('"') or None if etag is not None else None,
                    content_type=record.s3.object.contentType,
                    event_time=record.eventTime,
                    size=record.s3.object.size,
                    alternative_key=alternative,
                    sequencer=order,
                )
            )
        else:
            out.append(
                AssetRemoval(
                    asset_id=uri,
                    uri=uri,
                    event_time=record.eventTime,
                    bucket=bucket,
                    key=object_key,
                    alternative_key=alternative,
                    sequencer=order,
                )
            )
    return out


def ignored_kind(event_name: str) -> str:
    """The kind of a record that is not an object to tag or remove: the event name's family
    when it is one S3 or MinIO documents, else ``other`` (a metric label must not take any
    string a sender writes)."""
    family = event_name.removeprefix("s3:").partition(":")[0]
    return family if family in IGNORED_KINDS else "other"


def split_s3_uri(uri: str, policy: EventPolicy) -> tuple[str, str]:
    """Return ``(bucket, key)`` of ``s3://bucket/key``; everything after the bucket is the key.

    Raises :class:`PermanentError`: ``unsupported_uri`` for another scheme, a missing key, a
    bucket that is not a valid S3 bucket name or looks like a host address (IP literals in any
    notation, ``localhost``), a key S3 would refuse or a proxy would resolve (control
    characters, over 1,024 UTF-8 bytes, ``.``/``..`` segments: :func:`key_problem`),
    ``bucket_not_allowed`` when an allow-list is set and lacks it.
    """
    try:
        bucket, key = s3uri.split(uri)
    except ValueError as exc:
        raise PermanentError(Reason.UNSUPPORTED_URI, str(exc)) from None
    if _looks_like_host(bucket):
        raise PermanentError(Reason.UNSUPPORTED_URI, f"not an S3 bucket name: {bucket!r}")
    problem = key_problem(key)
    if problem:
        raise PermanentError(Reason.UNSUPPORTED_URI, f"object key {problem}")
    if policy.allowed_buckets is not None and bucket not in policy.allowed_buckets:
        raise PermanentError(Reason.BUCKET_NOT_ALLOWED, f"bucket {bucket!r} is not allowed")
    return bucket, key


def _looks_like_host(bucket: str) -> bool:
    if bucket in _LOCAL_NAMES or bucket.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(bucket)
        return True
    except ValueError:
        pass
    try:  # inet_aton also reads 127.1, 0x7f.0.0.1, 2130706433 and octal parts
        socket.inet_aton(bucket)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    json.dump(event_json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
