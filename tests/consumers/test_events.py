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

POLICY = EventPolicy(asset_id_binding="any")
BOUND = EventPolicy()  # the default: a native asset_id must be its uri
SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "event.schema.json"
FIXTURES = Path(__file__).parent / "fixtures"


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
        bucket="photos",
        key="a b.jpg",
        alternative_key="a+b.jpg",
    )


def test_other_notifications_give_nothing_and_are_counted_by_kind() -> None:
    kinds: list[str] = []
    accessed = dumps({"Records": [record("s3:ObjectAccessed:Get", "a.jpg")]})
    test_event = dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"})
    recorded = (FIXTURES / "versitygw" / "test-event.json").read_bytes()  # the gateway's own
    mixed = dumps(
        {
            "Records": [
                record("ObjectRestore:Completed", "a.jpg"),
                record("ObjectCreated:Put", "b.jpg"),
                record("s3:Replication:OperationFailedReplication", "c.jpg"),
            ]
        }
    )
    assert parse_event(accessed, None, POLICY, kinds.append) == []
    assert parse_event(test_event, None, POLICY, kinds.append) == []
    assert parse_event(recorded, None, POLICY, kinds.append) == []
    assert len(parse_event(mixed, None, POLICY, kinds.append)) == 1
    assert kinds == ["ObjectAccessed", "TestEvent", "TestEvent", "ObjectRestore", "Replication"]


def test_ignored_kinds_are_a_bounded_set_whatever_the_sender_writes() -> None:
    kinds: set[str] = set()
    for i in range(500):
        value = dumps({"Records": [record(f"s3:Made{i}Up:Thing", "a.jpg")]})
        assert parse_event(value, None, POLICY, kinds.add) == []
    assert kinds == {"other"}


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


def test_a_key_with_no_utf8_decoding_is_read_raw() -> None:
    """``%ff.jpg`` decodes to no UTF-8 text: no server would have encoded a key so, so it is
    a raw key (VersityGW's form) of that literal name."""
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
    [request] = parse_event(value, None, POLICY)
    assert isinstance(request, AssetRequest)
    assert (request.key, request.alternative_key) == ("%ff.jpg", None)


def test_event_too_large_is_checked_before_parsing() -> None:
    policy = EventPolicy(max_event_bytes=100, asset_id_binding="any")
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
    policy = EventPolicy(allowed_buckets=frozenset({"photos"}), asset_id_binding="any")
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


# -- hostile input: what the store or S3 would refuse is refused here, as one dead letter ----


def notification(*records: dict[str, Any]) -> bytes:
    return dumps({"Records": list(records)})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        # the 107-byte poison pill: a removal whose key decodes to a NUL
        (
            b'{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":'
            b'"photos"},"object":{"key":"%00"}}}]}',
            Reason.UNSUPPORTED_URI,
        ),
        (notification(record("ObjectCreated:Put", "a\x01b.jpg")), Reason.UNSUPPORTED_URI),
        (notification(record("ObjectCreated:Put", "a/\x85.jpg")), Reason.UNSUPPORTED_URI),
        (notification(record("ObjectCreated:Put", "a/../x")), Reason.UNSUPPORTED_URI),
        (notification(record("ObjectCreated:Put", "./x")), Reason.UNSUPPORTED_URI),
        (notification(record("ObjectCreated:Put", "k" * 1025)), Reason.UNSUPPORTED_URI),
        (notification(record("ObjectCreated:Put", "é" * 513)), Reason.UNSUPPORTED_URI),
        (native(uri="s3://photos/../x", asset_id="s3://photos/../x"), Reason.UNSUPPORTED_URI),
        (native(asset_id="\U0001f600" * 2040), Reason.INVALID_EVENT),
        (native(asset_id="a\x00b"), Reason.INVALID_EVENT),
        (native(asset_id="a\tb"), Reason.INVALID_EVENT),
        (native(etag="e" * 257), Reason.INVALID_EVENT),
        (native(tenant="t\x00"), Reason.INVALID_EVENT),
        (native(functions=["f\x00"]), Reason.INVALID_EVENT),
        (b'{"asset_id": "a\\ud800", "uri": "s3://photos/a.jpg"}', Reason.INVALID_EVENT),
    ],
    ids=lambda v: v if isinstance(v, Reason) else None,
)
def test_text_the_store_or_s3_would_refuse_is_refused(value: bytes, reason: Reason) -> None:
    assert reason_of(value) == reason


def test_an_encoded_lone_surrogate_is_a_literal_key_not_a_surrogate() -> None:
    value = notification(record("ObjectCreated:Put", "x"))
    value = value.replace(b'"key": "x"', b'"key": "%ED%A0%80"')
    [request] = parse_event(value, None, POLICY)
    assert isinstance(request, AssetRequest) and request.key == "%ED%A0%80"


def test_byte_limits_count_bytes_not_characters() -> None:
    [ok] = parse_event(notification(record("ObjectCreated:Put", "é" * 512)), None, POLICY)
    assert isinstance(ok, AssetRequest) and len(ok.key.encode()) == 1024
    longest = "s3://photos/" + "k" * 1024
    [request] = parse_event(native(asset_id=longest, uri=longest), None, BOUND)
    assert request.asset_id == longest


def test_records_per_notification_are_capped() -> None:
    many = notification(*[record("ObjectCreated:Put", f"k{i}") for i in range(101)])
    assert reason_of(many) == Reason.TOO_MANY_RECORDS
    assert len(parse_event(many, None, EventPolicy(asset_id_binding="any", max_records=101))) == 101


def test_asset_id_is_bound_to_its_uri_by_default() -> None:
    assert reason_of(native(), policy=BOUND) == Reason.INVALID_EVENT
    uri = "s3://photos/a/b.jpg"
    [request] = parse_event(native(asset_id=uri, uri=uri), None, BOUND)
    assert request.asset_id == uri
    with pytest.raises(PermanentError, match="TAGFLEET_ASSET_ID_BINDING"):
        parse_event(native(), None, BOUND)


def test_text_problems_name_what_is_wrong() -> None:
    from consumers.safe_text import key_problem, text_problem

    assert text_problem("fine é", 10) is None
    assert "lone surrogate" in (text_problem("a\ud800", 100) or "")
    assert "control character" in (text_problem("a\x85", 100) or "")
    assert "8 UTF-8 bytes" in (text_problem("\U0001f600" * 2, 7) or "")
    assert "'..'" in (key_problem("a/../b") or "")
    assert key_problem("a/..b/c.") is None  # dots inside a segment are fine


CASES = json.loads((FIXTURES / "cases.json").read_text())


@pytest.mark.parametrize("server", ["aws", "minio", "versitygw"])
@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["file"])
def test_every_servers_form_names_the_same_object(server: str, case: dict[str, Any]) -> None:
    """AWS's and MinIO's URL-encoded keys (built from their documentation's rules) and
    VersityGW's raw keys (recorded from the server) resolve to the same asset, at the first
    reading."""
    if case.get(server) is None:
        pytest.skip(f"no {server} fixture for {case['file']}")
    value = (FIXTURES / case[server]).read_bytes()
    items = parse_event(value, None, EventPolicy(asset_id_binding="any"))
    assert [item.asset_id for item in items] == [case["uri"]] * len(items)
    assert items


@pytest.mark.parametrize(
    ("key", "versitygw", "readings"),
    [
        ("a+b.jpg", False, ("a b.jpg", "a+b.jpg")),  # AWS/MinIO: '+' is a space; raw is the other
        ("a+b.jpg", True, ("a+b.jpg", "a b.jpg")),  # the gateway sends keys raw
        ("a b.jpg", False, ("a b.jpg", None)),  # a space is never left by URL-encoding: raw
        ("100%25.jpg", False, ("100%.jpg", "100%25.jpg")),
        ("100% off.jpg", False, ("100% off.jpg", None)),
        ("plain/key.jpg", False, ("plain/key.jpg", None)),
        ("caf%C3%A9.jpg", True, ("caf%C3%A9.jpg", "café.jpg")),
    ],
)
def test_key_readings(key: str, versitygw: bool, readings: tuple[str, str | None]) -> None:
    from consumers.object_keys import key_readings

    assert key_readings(key, versitygw) == readings
