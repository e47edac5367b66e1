"""A fuzz of the tags API's inputs (Hypothesis, against ``tagfleet api`` on the real
PostgreSQL, with search on a small embedding store and the tiny backbone's text tower):
whatever the path, query, body or key, the answer is never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from api_harness import ApiProcess, make_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api_access import A, result

from consumers.store import TagStore
from models.backbones import backbone_key, resolve_ref
from models.embedding_store import EmbeddingRow, open_embedding_store

pytestmark = pytest.mark.integration

# Any text a client can send (lone surrogates cannot be encoded as UTF-8 by any client).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
PART = st.one_of(TEXT, st.sampled_from(["", ".", "..", "%00", "%2F", "s3://lib-a/cars/one.jpg"]))
NUMBER = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(["1e309", "-0", "0x10", "", "inf"]),
)
# What a client can put in a header value (visible ASCII; h11 refuses the rest before sending).
HEADER = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)
SEARCH_PARAMS = st.dictionaries(
    st.sampled_from(["label", "function", "min_score", "origin", "tenant", "limit", "cursor"]),
    st.one_of(TEXT, NUMBER, st.sampled_from(["ai", "human", "any", "red", "colours"])),
)
K = st.one_of(NUMBER, st.sampled_from(["1", "20", "1000", "1001", "0"]))
TINY = "models/configs/tiny-vit.json"
BODY = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBER, TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["action", "label"]), inner)
    ),
    max_leaves=6,
)


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[tuple[ApiProcess, str]]:
    store = TagStore(pg_url)
    store.upgrade()
    store.save([result(A, "acme")])
    store.close()
    embeddings = open_embedding_store(str(tmp_path / "embeddings"))
    key = backbone_key(resolve_ref(TINY, None))
    for i, asset in enumerate([A, "s3://lib-a/cars/two.jpg"]):  # the second: not in the store
        vector = np.linspace(-1.0, 1.0, 64, dtype=np.float32) + i
        embeddings.put([EmbeddingRow(asset, key, f"{i:064x}", vector, "acme")])
    api = ApiProcess(
        tmp_path / "api.log",
        pg_url,
        TAGFLEET_EMBEDDINGS=str(tmp_path / "embeddings"),
        TAGFLEET_SEARCH_BACKBONE=TINY,
        TAGFLEET_DEVICE="cpu",
    )
    try:
        yield api, make_key(pg_url, "acme", "admin")
    finally:
        api.stop()


def _request(http: httpx.Client, key: str, draw: Any) -> httpx.Response:
    kind = draw(
        st.sampled_from(
            ["asset", "label", "search", "review", "answer", "image", "fn", "similar", "text"]
        )
    )
    auth = draw(st.one_of(st.just(f"Bearer {key}"), st.just(key), HEADER.map("Bearer ".__add__)))
    headers = {"Authorization": auth}
    if kind == "asset":
        return http.get("/v1/assets/" + quote(draw(PART), safe=""), headers=headers)
    if kind == "label":
        path = "/".join(quote(draw(PART), safe="") for _ in range(3))
        method = draw(st.sampled_from(["PUT", "DELETE"]))
        return http.request(
            method, "/v1/assets/" + path.replace("/", "/labels/", 1), headers=headers
        )
    if kind == "search":
        return http.get("/v1/search", params=draw(SEARCH_PARAMS), headers=headers)
    if kind == "similar":
        asset = quote(draw(PART), safe=draw(st.sampled_from(["", "/:"])))
        params = draw(st.dictionaries(st.just("k"), K))
        return http.get(f"/v1/assets/{asset}/similar", params=params, headers=headers)
    if kind == "text":
        params = draw(st.dictionaries(st.sampled_from(["q", "k"]), st.one_of(TEXT, K)))
        return http.get("/v1/search/text", params=params, headers=headers)
    if kind == "review":
        params = draw(st.dictionaries(st.sampled_from(["status", "limit", "after"]), NUMBER))
        return http.get("/v1/review", params=params, headers=headers)
    if kind == "answer":
        item = quote(draw(st.one_of(NUMBER, PART)), safe="")
        return http.post(f"/v1/review/{item}", json=draw(BODY), headers=headers)
    if kind == "image":
        return http.get(f"/v1/review/{quote(draw(NUMBER), safe='')}/image", headers=headers)
    return http.get("/v1/functions", headers=headers)


def test_no_input_makes_the_api_fail(server: tuple[ApiProcess, str]) -> None:
    api, key = server
    seen: set[int] = set()

    @settings(
        max_examples=400,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        with api.client() as http:
            response = _request(http, key, data.draw)
        seen.add(response.status_code)
        assert response.status_code < 500, (response.request.url, response.text)
        if response.status_code >= 400:
            assert response.json()["detail"], response.text

    check()
    assert {200, 401, 404, 422} <= seen, seen
