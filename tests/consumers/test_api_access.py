"""The tags API on the real PostgreSQL (issue 18 items 1 and 2): human labels over AI tags,
tenants and keys, 401/403/404, malformed input as 4xx, the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from api_harness import ApiProcess, asset_path, json_of, label_path, make_key, tagfleet

from consumers.domain import AssetResult, SourcePosition
from consumers.store import TagStore

pytestmark = pytest.mark.integration

A = "s3://lib-a/cars/one.jpg"
B = "s3://lib-b/cars/two.jpg"


def _classify(version: str, label: str, score: float) -> dict[str, Any]:
    return {
        "type": "classify",
        "version": version,
        "label": label,
        "score": score,
        "scores": {label: score, "other": round(1 - score, 3)},
    }


def _tags(version: str, **scores: float) -> dict[str, Any]:
    return {
        "type": "tags",
        "version": version,
        "tags": [{"label": k, "score": v} for k, v in scores.items() if v >= 0.5],
        "scores": scores,
        "thresholds": dict.fromkeys(scores, 0.5),
    }


def result(asset_id: str, tenant: str | None, version: str = "v1", **tags: float) -> AssetResult:
    return AssetResult(
        asset_id=asset_id,
        uri=asset_id,
        etag="e1",
        width=640,
        height=480,
        functions={
            "make": _classify(version, "honda", 0.9),
            "colours": _tags(version, **(tags or {"red": 0.8, "blue": 0.6, "green": 0.1})),
        },
        source=SourcePosition("assets", 0, 5),
        processed_at=datetime(2026, 12, 1, tzinfo=UTC),
        tenant=tenant,
    )


@pytest.fixture
def api(pg_url: str, tmp_path: Path) -> Iterator[tuple[ApiProcess, TagStore]]:
    store = TagStore(pg_url)
    store.upgrade()
    store.save([result(A, "acme"), result(B, "globex")])
    server = ApiProcess(tmp_path / "api.log", pg_url)
    try:
        yield server, store
    finally:
        server.stop()
        store.close()


def _effective(view: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(t["function"], t["label"], t["origin"]) for t in view["effective_tags"]}


def test_a_rejected_tag_stays_gone_and_an_added_label_shows_its_author(
    api: tuple[ApiProcess, TagStore], pg_url: str
) -> None:
    server, store = api
    key = make_key(pg_url, "acme", "label", name="alice")
    with server.client(key) as http:
        view = json_of(http.get(asset_path(A)))
        assert ("colours", "blue", "ai") in _effective(view)
        blue = next(t for t in view["effective_tags"] if t["label"] == "blue")
        assert blue["model_version"] == "v1" and blue["score"] == 0.6
        assert blue["threshold"] == 0.5 and blue["source"] == {
            "topic": "assets",
            "partition": 0,
            "offset": 5,
        }

        json_of(http.delete(label_path(A, "colours", "blue")))
        added = json_of(http.put(label_path(A, "colours", "yellow")))
        assert added["by"] == "alice" and added["decision"] == "present"
        view = json_of(http.get(asset_path(A)))
        assert ("colours", "blue", "ai") not in _effective(view)
        assert ("colours", "yellow", "human") in _effective(view)
        yellow = next(t for t in view["effective_tags"] if t["label"] == "yellow")
        assert yellow["by"] == "alice" and yellow["time"].endswith("Z") and yellow["ai"] == []

        # A newer model version re-tags the asset, blue among its tags again.
        stats = store.save([replace(result(A, "acme", "v2", blue=0.95, red=0.7), etag="e2")])
        assert stats.replaced_functions == 2
        assert {t.label for t in store.tags_for_asset(A) if t.model_version == "v2"} >= {"blue"}
        view = json_of(http.get(asset_path(A)))
        assert view["functions"]["colours"]["version"] == "v2"
        assert ("colours", "blue", "ai") not in _effective(view)
        assert ("colours", "yellow", "human") in _effective(view)
        search = json_of(http.get("/v1/search", params={"label": "blue", "origin": "any"}))
        assert search["items"] == []
        search = json_of(http.get("/v1/search", params={"label": "yellow", "origin": "human"}))
        assert [i["asset_id"] for i in search["items"]] == [A]

        # Confirming a model's tag keeps the model's provenance beside the person's.
        json_of(http.put(label_path(A, "colours", "red")))
        red = next(
            t for t in json_of(http.get(asset_path(A)))["effective_tags"] if t["label"] == "red"
        )
        assert red["origin"] == "human" and red["ai"][0]["model_version"] == "v2"


def test_tenants_keys_and_scopes(api: tuple[ApiProcess, TagStore], pg_url: str) -> None:
    server, _ = api
    reader_a = make_key(pg_url, "acme", "read")
    labeller_b = make_key(pg_url, "globex", "label")
    with server.client() as anonymous:
        assert anonymous.get(asset_path(A)).status_code == 401
        assert anonymous.get("/v1/search", params={"label": "red"}).status_code == 401
        assert anonymous.get("/v1/functions").status_code == 401
        assert anonymous.get("/healthz").status_code == 200
        wrong = anonymous.get(asset_path(A), headers={"Authorization": reader_a + "x"})
        assert wrong.status_code == 401
        forged = reader_a[:-4] + ("AAAA" if not reader_a.endswith("AAAA") else "BBBB")
        assert anonymous.get(asset_path(A), headers={"X-API-Key": forged}).status_code == 401
    with server.client(reader_a) as http:
        assert json_of(http.get(asset_path(A)))["tenant"] == "acme"
        missing = http.get(asset_path(B))
        assert missing.status_code == 404
        never = http.get(asset_path("s3://lib-b/never-stored.jpg"))
        assert never.status_code == 404 and never.json() == missing.json()  # no existence leak
        red = json_of(http.get("/v1/search", params={"label": "red"}))
        assert [i["asset_id"] for i in red["items"]] == [A]
        assert (
            http.get("/v1/search", params={"label": "red", "tenant": "globex"}).status_code == 404
        )
        assert http.put(label_path(A, "colours", "blue")).status_code == 403
        assert http.delete(label_path(A, "colours", "blue")).status_code == 403
    with server.client(labeller_b) as http:
        assert http.delete(label_path(A, "colours", "red")).status_code == 404
        assert json_of(http.get(asset_path(B)))["tenant"] == "globex"
    with server.client(reader_a) as http:
        assert ("colours", "red", "ai") in _effective(json_of(http.get(asset_path(A))))

    key_id = reader_a.split("_")[1]
    revoked = tagfleet({"TAGFLEET_STORE": pg_url}, "api-key", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    with server.client(reader_a) as http:
        assert http.get(asset_path(A)).status_code == 401
    again = tagfleet({"TAGFLEET_STORE": pg_url}, "api-key", "revoke", key_id)
    assert again.returncode == 1


def test_keys_are_stored_hashed(api: tuple[ApiProcess, TagStore], pg_url: str) -> None:
    _, store = api
    key = make_key(pg_url, "acme", "read")
    with store.engine.connect() as conn:
        stored = [tuple(map(str, row)) for row in conn.exec_driver_sql("SELECT * FROM api_keys")]
    secret = key.split("_", 2)[2]
    assert stored and not any(secret in value for row in stored for value in row)


MALFORMED: list[tuple[str, dict[str, str], int]] = [
    ("/v1/search", {"label": "red", "cursor": "not-a-cursor"}, 400),
    ("/v1/search", {"label": "red", "cursor": "eyJhZnRlciI6IDF9"}, 400),  # {"after": 1}
    ("/v1/search", {"label": "red", "min_score": "nan"}, 422),
    ("/v1/search", {"label": "red", "min_score": "2"}, 422),
    ("/v1/search", {"label": "red", "limit": "0"}, 422),
    ("/v1/search", {"label": "red", "limit": "100000"}, 422),
    ("/v1/search", {"label": "red", "origin": "robot"}, 422),
    ("/v1/search", {"label": "bad\x00label"}, 422),
    ("/v1/search", {"label": "red", "function": "../x"}, 422),
    ("/v1/search", {}, 422),
    ("/v1/assets/s3%3A%2F%2Fa%2F%00", {}, 422),
    ("/v1/review", {"after": "-1"}, 422),
    ("/v1/review", {"status": "lost"}, 422),
    ("/v1/review", {"after": "2147483648"}, 422),  # past the 32-bit item ids
    ("/v1/review/2147483648/image", {}, 422),  # found by the fuzz: was a 500
]


def test_malformed_input_is_a_4xx_with_a_message(
    api: tuple[ApiProcess, TagStore], pg_url: str
) -> None:
    server, _ = api
    with server.client(make_key(pg_url, "acme", "admin")) as http:
        for path, params, status in MALFORMED:
            response = http.get(path, params=params)
            assert response.status_code == status, (path, params, response.text)
            assert response.json()["detail"], (path, params)


def test_openapi_document_and_docs(api: tuple[ApiProcess, TagStore]) -> None:
    server, _ = api
    with server.client() as http:
        doc = json_of(http.get("/openapi.json"))
        assert http.get("/docs").status_code == 200
    paths = set(doc["paths"])
    assert {
        "/v1/assets/{asset_id}",
        "/v1/search",
        "/v1/assets/{asset_id}/labels/{function}/{label}",
        "/v1/review",
        "/v1/review/{item}",
        "/v1/functions",
    } <= paths
    assert all(p.startswith("/v1/") for p in paths)
