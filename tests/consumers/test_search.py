"""Search on stored embeddings: ``tagfleet search`` (text), ``tagfleet similar`` (image) and
their API routes, over the real embedding store (LanceDB) and the real tag store, tenant by
tenant.

Text search needs a text tower that agrees with the image tower: the tiny backbone's text
projection is fitted (least squares) so that each colour's prompt lands on the mean embedding
of that colour's pictures, on other pictures than the library's. The library: 400 pictures of
four colours, half of tenant "default", half of tenant "globex".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from library_data import COLOUR_NAMES, PROMPT, build_library, text_aligned_weights, tiny_backbone

from consumers.api.app import ApiContext, create_app
from consumers.api.keys import create_key
from consumers.cli import main as tagfleet
from consumers.library_search import SearchBackbone, Searcher, searcher_for
from consumers.store import TagStore

N = 400
TENANTS = ("default", "globex")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("search")
    weights = text_aligned_weights(tiny_backbone(), tmp / "aligned.pt")
    backbone = tiny_backbone(str(weights))
    url = f"sqlite:///{tmp / 'tags.db'}"
    library = build_library(tmp, url, backbone, N, seed=3, tenants=TENANTS)
    yield {"tmp": tmp, "weights": str(weights), "url": url, "library": library}


def args(world: dict[str, Any]) -> list[str]:
    return ["--embeddings", world["library"].embeddings, "--store", world["url"]]


def average_precision(ranked: list[str], relevant: set[str]) -> float:
    hits = np.array([a in relevant for a in ranked], dtype=float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / len(relevant))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert tagfleet(list(argv)) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_text_search_ranks_the_prompts_assets_first(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lib = world["library"]
    mine = {a: c for a, c, t in zip(lib.ids, lib.truth, lib.tenants, strict=True) if t == "default"}
    text = ["--backbone", "models/configs/tiny-vit.json", "--weights", world["weights"]]
    aps = {}
    for colour in COLOUR_NAMES:
        hits = run(capsys, "search", PROMPT.format(colour), "-k", str(N), *args(world), *text)
        ranked = [h["asset_id"] for h in hits]
        assert set(ranked) == set(mine)  # the tenant's assets, every one, none of globex
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        aps[colour] = average_precision(ranked, {a for a, c in mine.items() if c == colour})
    mean_ap = float(np.mean(list(aps.values())))
    rng = np.random.default_rng(0)
    chance = float(
        np.mean(
            [
                average_precision(
                    list(rng.permutation(list(mine))), {a for a in mine if mine[a] == c}
                )
                for c in COLOUR_NAMES
            ]
        )
    )
    print(f"text search mean average precision {mean_ap:.3f} (random order: {chance:.3f}) {aps}")
    assert mean_ap >= 0.8 and min(aps.values()) >= 0.6, aps
    assert chance < 0.35


def test_similar_lists_the_tenants_nearest_assets(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lib = world["library"]
    colour_of = dict(zip(lib.ids, lib.truth, strict=True))
    tenant_of = dict(zip(lib.ids, lib.tenants, strict=True))
    same = []
    for asset in [a for a, t in zip(lib.ids, lib.tenants, strict=True) if t == "globex"][:10]:
        hits = run(capsys, "similar", asset, "-k", "20", "--tenant", "globex", *args(world))
        ids = [h["asset_id"] for h in hits]
        assert len(ids) == 20 and asset not in ids
        assert {tenant_of[a] for a in ids} == {"globex"}
        same += [colour_of[a] == colour_of[asset] for a in ids]
    assert np.mean(same) >= 0.8  # neighbours share the colour (chance 0.25)
    globex_asset = next(a for a, t in zip(lib.ids, lib.tenants, strict=True) if t == "globex")
    assert tagfleet(["similar", globex_asset, *args(world)]) == 2  # not default's: not found
    assert "no such asset" in capsys.readouterr().err


def test_the_api_searches_the_keys_tenant_only(world: dict[str, Any]) -> None:
    lib = world["library"]
    store = TagStore(world["url"])
    keys = {t: create_key(store.engine, t, ("read",), t) for t in TENANTS}
    backbone = SearchBackbone(backbone="models/configs/tiny-vit.json", weights=world["weights"])
    searcher = searcher_for(lib.embeddings, store.engine, backbone)
    client = TestClient(create_app(ApiContext(store=store, fleet_path="", search=searcher)))

    def get(path: str, tenant: str, **params: Any) -> Any:
        return client.get(path, params=params, headers={"Authorization": f"Bearer {keys[tenant]}"})

    try:
        tenant_of = dict(zip(lib.ids, lib.tenants, strict=True))
        for tenant in TENANTS:
            found = get("/v1/search/text", tenant, q="a red thing", k=50)
            assert found.status_code == 200, found.text
            items = found.json()["items"]
            assert len(items) == 50 and {tenant_of[i["asset_id"]] for i in items} == {tenant}
            own = next(a for a, t in tenant_of.items() if t == tenant)
            other = next(a for a, t in tenant_of.items() if t != tenant)
            near = get(f"/v1/assets/{own}/similar", tenant, k=5)
            assert near.status_code == 200, near.text
            assert {tenant_of[i["asset_id"]] for i in near.json()["items"]} == {tenant}
            assert get(f"/v1/assets/{other}/similar", tenant).status_code == 404
        assert get("/v1/assets/s3://library/none.png/similar", "default").status_code == 404
        assert get("/v1/search/text", "default", q="x", k=0).status_code == 422
        assert get("/v1/search/text", "default", q="x", k="many").status_code == 422
        assert get("/v1/search/text", "default", q="  ").status_code == 422
        assert get("/v1/search/text", "default").status_code == 422  # no q
        assert client.get("/v1/search/text", params={"q": "x"}).status_code == 401
        schema = client.get("/openapi.json").json()["paths"]
        assert "/v1/search/text" in schema and "/v1/assets/{asset_id}/similar" in schema
        # the asset route still answers for the asset itself
        own = lib.ids[0]
        assert get(f"/v1/assets/{own}", "default").status_code == 200

        off = TestClient(create_app(ApiContext(store=store, fleet_path="")))
        answer = off.get(
            "/v1/search/text", params={"q": "x"}, headers={"X-Api-Key": keys["default"]}
        )
        assert answer.status_code == 503 and "--embeddings" in answer.json()["detail"]
        no_text = Searcher(searcher.embeddings, store.engine, searcher.key, None)
        partial = TestClient(create_app(ApiContext(store=store, fleet_path="", search=no_text)))
        answer = partial.get(
            "/v1/search/text", params={"q": "x"}, headers={"X-Api-Key": keys["default"]}
        )
        assert answer.status_code == 503 and "--backbone" in answer.json()["detail"]
    finally:
        store.close()


def test_search_commands_say_what_is_wrong(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert tagfleet(["search", "a red thing", *args(world)]) == 2  # no backbone: no text tower
    assert "--backbone" in capsys.readouterr().err
    nowhere = ["--embeddings", str(tmp_path / "none"), "--store", world["url"]]
    with pytest.raises(SystemExit, match="no embedding store at"):
        tagfleet(["similar", "x", *nowhere])  # a reader does not create an empty store
    assert not (tmp_path / "none").exists()
    assert tagfleet(["similar", "x", "-k", "0", *args(world)]) == 2
