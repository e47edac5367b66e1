import json
from datetime import UTC, datetime

from consumers.domain import AssetRemoval, AssetResult, Reason, SourcePosition
from consumers.results import dlq_headers, encode_event, removal_event, result_event


def test_result_event_has_the_contract_fields():
    result = AssetResult(
        asset_id="s3://b/k",
        uri="s3://b/k",
        etag="e",
        width=4000,
        height=3000,
        functions={
            "make": {
                "type": "classify",
                "version": "v1",
                "label": "honda",
                "score": 0.9,
                "scores": {"honda": 0.9, "ford": 0.1},
            }
        },
        source=SourcePosition("assets", 1, 7),
        processed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        latency_ms=12.34,
        attributes={"team": "x"},
    )
    event = json.loads(encode_event(result_event(result)))
    assert event["asset_id"] == "s3://b/k"
    assert (event["width"], event["height"], event["etag"]) == (4000, 3000, "e")
    assert event["functions"]["make"]["label"] == "honda"
    assert event["processed_at"] == "2026-01-02T03:04:05Z"
    assert event["latency_ms"] == 12.3
    assert event["attributes"] == {"team": "x"}


def test_removal_event():
    event = removal_event(AssetRemoval("s3://b/k", "s3://b/k"), datetime(2026, 1, 1, tzinfo=UTC))
    assert event == {
        "asset_id": "s3://b/k",
        "uri": "s3://b/k",
        "removed": True,
        "processed_at": "2026-01-01T00:00:00Z",
    }


def test_dlq_headers_are_utf8_strings_with_the_source_position():
    headers = dict(
        dlq_headers(Reason.INVALID_JSON, "bad — json", SourcePosition("assets", 3, 42), "s3://b/é")
    )
    assert headers["tagfleet-reason"] == b"invalid_json"
    assert headers["tagfleet-message"].decode() == "bad — json"
    assert headers["tagfleet-source-topic"] == b"assets"
    assert headers["tagfleet-source-partition"] == b"3"
    assert headers["tagfleet-source-offset"] == b"42"
    assert headers["tagfleet-asset-id"].decode() == "s3://b/é"
