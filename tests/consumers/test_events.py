"""Event parsing: both forms, every reason code, the published schema, a fuzz run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.domain import AssetRemoval, AssetRequest, PermanentError, Reason
from consumers.events import EventPolicy, event_json_schema, parse_event

POLICY = EventPolicy()
SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "event.schema.json"


def dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def native(**fields: Any) -> bytes:
    return dumps({"asset_id": "a1", "uri": "s3://photos/a/b.jpg", **fields})


def record(name: str, key: str, bucket: str = "photos", **obj: Any) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2024-05-01T10:00:00.123Z",
        "eventName": name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), **obj},
        },
    }


def reason_of(
    value: bytes | None, key: bytes | None = None, policy: EventPolicy = POLICY
) -> Reason:
    with pytest.raises(PermanentError) as info:
        parse_event(value, key, policy)
    return info.value.reason


def test_native_event_with_every_field() -> None:
    value = native(
        functions=["cars", "colours"],
        tenant="t1",
        etag="abc",
        content_type="image/jpeg",
        event_time="2024-05-01T12:00:00+02:00",
        attributes={"album": 7},
    )
    [request] = parse_event(value, b"a1", POLICY)
    assert request == AssetRequest(
        asset_id="a1",
        uri="s3://photos/a/b.jpg",
        bucket="photos",
        key="a/b.jpg",
        functions=("cars", "colours"),
        tenant="t1",
        etag="abc",
        content_type="image/jpeg",
        event_time=datetime(2024, 5, 1, 10, tzinfo=UTC),
        attributes={"album": 7},
    )


def test_native_uri_key_is_taken_literally() -> None:
    [request] = parse_event(native(uri="s3://photos/dir/a b+c%20?.jpg"), None, POLICY)
    assert isinstance(request, AssetRequest)
    assert request.key == "dir/a b+c%20?.jpg"


def test_aws_notification_with_encoded_keys() -> None:
    keys = ["summer 2024/beach+sun.jpg", "café/näive ü.png", "plain.gif"]
    value = dumps({"Records": [record("ObjectCreated:Put", k, size=10, eTag="e") for k in keys]})
    requests = parse_event(value, None, POLICY)
    assert [r.asset_id for r in requests] == [f"s3://photos/{k}" for k in keys]
    assert all(isinstance(r, AssetRequest) and r.size == 10 and r.etag == "e" for r in requests)
    assert requests[0].event_time == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)


def test_minio_notification_with_top_level_fields() -> None:
    value = dumps(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": "photos/my cat.jpg",
            "Records": [
                record(
                    "s3:ObjectCreated:Put",
                    "my cat.jpg",
                    size=3,
                    eTag="x",
                    contentType="image/jpeg",
                    sequencer="17",
                )
            ],
        }
    )
    [request] = parse_event(value, b"photos/my cat.jpg", POLICY)
    assert isinstance(request, AssetRequest)
    assert (request.asset_id, request.key, request.content_type) == (
        "s3://photos/my cat.jpg",
        "my cat.jpg",
        "image/jpeg",
    )


@pytest.mark.parametrize(
    "name",
    ["ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated", "LifecycleExpiration:Delete"],
)
def test_removals(name: str) -> None:
    [removal] = parse_event(dumps({"Records": [record(name, "a b.jpg")]}), None, POLICY)
    assert removal == AssetRemoval(
        asset_id="s3://photos/a b.jpg",
        uri="s3://photos/a b.jpg",
        event_time=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC),
    )


def test_other_notifications_give_nothing() -> None:
    accessed = dumps({"Records": [record("s3:ObjectAccessed:Get", "a.jpg")]})
    test_event = dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"})
    assert parse_event(accessed, None, POLICY) == []
    assert parse_event(test_event, None, POLICY) == []


@pytest.mark.parametrize("value", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"a": 1}x'])
def test_invalid_json(value: bytes) -> None:
    assert reason_of(value) is Reason.INVALID_JSON


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (dumps({"uri": "s3://photos/a.jpg"}), "asset_id"),
        (dumps({"asset_id": "a"}), "uri"),
        (native(asset_id=""), "asset_id"),
        (native(asset_id=5), "asset_id"),
        (native(functions="cars"), "functions"),
        (native(functions=[]), "functions"),
        (native(functions=[""]), "functions.0"),
        (native(event_time="yesterday"), "event_time"),
        (native(event_time="2024-05-01T12:00:00"), "event_time"),
        (native(event_time=1714557600), "event_time"),
        (native(attributes=[1]), "attributes"),
        (dumps({"Records": []}), "Records"),
        (dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}), "Records.0.s3"),
        (
            dumps({"Records": [record("ObjectCreated:Put", "a", size=-1)]}),
            "Records.0.s3.object.size",
        ),
        (
            dumps({"Records": [record("ObjectCreated:Put", "a", size="9")]}),
            "Records.0.s3.object.size",
        ),
    ],
)
def test_schema_violations_name_the_field(value: bytes, field: str) -> None:
    with pytest.raises(PermanentError) as info:
        parse_event(value, None, POLICY)
    assert info.value.reason is Reason.INVALID_EVENT
    assert info.value.message.startswith(f"{field}:") or f"; {field}:" in info.value.message


@pytest.mark.parametrize("value", [b"[]", b"42", b"null", b'"s3://photos/a"'])
def test_non_object_events(value: bytes) -> None:
    assert reason_of(value) is Reason.INVALID_EVENT


def test_tombstone_and_key_mismatch() -> None:
    assert reason_of(None) is Reason.INVALID_EVENT
    assert reason_of(native(), key=b"other") is Reason.INVALID_EVENT


def test_key_with_bad_percent_encoding() -> None:
    value = dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "photos"}, "object": {"key": "%ff.jpg"}},
                }
            ]
        }
    )
    assert reason_of(value) is Reason.INVALID_EVENT


def test_event_too_large_is_checked_before_parsing() -> None:
    policy = EventPolicy(max_event_bytes=100)
    assert reason_of(b"x" * 101, policy=policy) is Reason.EVENT_TOO_LARGE
    assert reason_of(b"x" * 100, policy=policy) is Reason.INVALID_JSON


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "http://example.com/a.jpg",
        "https://photos.s3.amazonaws.com/a.jpg",
        "gs://photos/a.jpg",
        "photos/a.jpg",
        "s3://photos",
        "s3://photos/",
        "s3:///a.jpg",
        "s3://169.254.169.254/latest/meta-data",
        "s3://127.0.0.1/a",
        "s3://127.1/a",
        "s3://2130706433/a",
        "s3://0x7f000001/a",
        "s3://0177.0.0.1/a",
        "s3://0x7f.1/a",
        "s3://[::1]/a",
        "s3://localhost/a",
        "s3://foo.localhost/a",
        "s3://user@photos/a",
        "s3://photos:9000/a",
        "s3://PHOTOS/a",
        "s3://ab/a",
    ],
)
def test_unsupported_uris(uri: str) -> None:
    assert reason_of(native(uri=uri)) is Reason.UNSUPPORTED_URI


def test_notification_to_an_address_bucket_is_unsupported() -> None:
    value = dumps({"Records": [record("ObjectCreated:Put", "a.jpg", bucket="169.254.169.254")]})
    assert reason_of(value) is Reason.UNSUPPORTED_URI


def test_bucket_allow_list() -> None:
    policy = EventPolicy(allowed_buckets=frozenset({"photos"}))
    assert len(parse_event(native(), None, policy)) == 1
    assert reason_of(native(uri="s3://other/a.jpg"), policy=policy) is Reason.BUCKET_NOT_ALLOWED
    value = dumps({"Records": [record("ObjectCreated:Put", "a.jpg", bucket="other")]})
    assert reason_of(value, policy=policy) is Reason.BUCKET_NOT_ALLOWED


def test_policy_refuses_unfetchable_schemes() -> None:
    with pytest.raises(ValueError):
        EventPolicy(allowed_schemes=frozenset({"s3", "http"}))


def test_committed_schema_is_generated_from_the_models() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == event_json_schema()


def test_schema_accepts_both_forms() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(event_json_schema())
    validator.validate(json.loads(native(event_time="2024-05-01T12:00:00Z")))
    validator.validate({"Records": [record("ObjectCreated:Put", "a b.jpg", size=1)]})
    assert not validator.is_valid({"uri": "s3://photos/a.jpg"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "asset_id",
                    "uri",
                    "Records",
                    "s3",
                    "eventName",
                    "functions",
                    "event_time",
                    "bucket",
                    "object",
                    "key",
                    "name",
                    "size",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=500)
@given(
    st.one_of(st.binary(max_size=200), json_values.map(dumps)), st.none() | st.binary(max_size=8)
)
def test_fuzz_only_typed_errors(value: bytes, key: bytes | None) -> None:
    try:
        result = parse_event(value, key, POLICY)
    except PermanentError as exc:
        assert exc.reason in {Reason.INVALID_JSON, Reason.INVALID_EVENT, Reason.UNSUPPORTED_URI}
    else:
        assert all(isinstance(item, AssetRequest | AssetRemoval) for item in result)
