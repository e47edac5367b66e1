"""Content-hash dedup (issue 19 item 5): when results stand for another asset's, the store's
answer, and `tagfleet tag`'s stages reusing them (the model counted)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from harness import image_bytes

from consumers.dedup import Hit, RecentResults, covers, reused, wanted_versions
from consumers.domain import AssetResult

FLEET = {
    "shape": SimpleNamespace(version="aaaa"),
    "colours": SimpleNamespace(version="bbbb"),
}


def test_wanted_versions_are_the_served_ones_of_the_functions_asked_for() -> None:
    assert wanted_versions(FLEET, None) == {"shape": "aaaa", "colours": "bbbb"}
    assert wanted_versions(FLEET, ("colours", "not-in-fleet")) == {"colours": "bbbb"}
    assert wanted_versions(FLEET, ()) == {}
    assert wanted_versions({"x": SimpleNamespace(version=None)}, None) is None


def test_results_are_reused_only_when_every_wanted_version_matches() -> None:
    hit = Hit("s3://b/first.png", {"shape": {"version": "aaaa", "label": "circle"}})
    assert covers(hit, {"shape": "aaaa"})
    assert not covers(hit, {"shape": "cccc"})  # another version serves now
    assert not covers(hit, {"shape": "aaaa", "colours": "bbbb"})  # one function missing
    assert not covers(hit, {})  # nothing asked: nothing to reuse
    assert reused(hit, {"shape": "aaaa"}) == {
        "shape": {"version": "aaaa", "label": "circle", "reused_from": "s3://b/first.png"}
    }
    assert "reused_from" not in hit.functions["shape"]  # a copy


def test_recent_results_forget_the_least_recently_used() -> None:
    recent = RecentResults(size=2)
    for name in ("a", "b"):
        recent.put(name, Hit(name, {}))
    assert recent.get("a") is not None  # a is now the most recent
    recent.put("c", Hit("c", {}))
    assert recent.get("b") is None and recent.get("a") is not None and len(recent) == 2


def _result(asset_id: str, content_hash: str | None, version: str = "aaaa") -> AssetResult:
    return AssetResult(
        asset_id=asset_id,
        uri=asset_id,
        etag=None,
        width=10,
        height=10,
        functions={"shape": {"type": "classify", "version": version, "label": "x", "score": 0.9}},
        source=None,
        processed_at=datetime.now(UTC),
        content_hash=content_hash,
    )


def test_the_store_answers_by_content_hash_with_assets_not_removed(sqlite_url: str) -> None:
    from consumers.store import TagStore

    store = TagStore(sqlite_url)
    store.upgrade()
    try:
        store.save([_result("s3://b/2.png", "h1"), _result("s3://b/1.png", "h1")])
        store.save([_result("s3://b/3.png", "h2")])
        store.remove(["s3://b/3.png"], None)
        store.save([_result("s3://b/1.png", None, version="dddd")])  # no hash: the stored one stays
        found = store.reusable_results(["h1", "h2", "h3"])
        assert set(found) == {"h1"}
        assert found["h1"].asset_id == "s3://b/1.png"  # the smallest id holding the bytes
        assert found["h1"].functions["shape"]["version"] == "dddd"
        assert store.reusable_results([]) == {}
    finally:
        store.close()


@pytest.fixture
def counted_fleet(fleet_path: Path) -> tuple[Any, list[int]]:
    """The test fleet on the CPU, with the images its backbone encodes counted."""
    from models import load_fleet

    fleet = load_fleet(fleet_path, device="cpu")
    encoded: list[int] = []
    for backbone in fleet.backbones.values():
        encode = backbone.encode

        def counting(images: Any, encode: Any = encode) -> Any:
            encoded.append(len(images))
            return encode(images)

        backbone.encode = counting  # type: ignore[method-assign]
    return fleet, encoded


def test_tag_infers_the_same_bytes_once_and_a_later_run_reuses_the_stored_results(
    tmp_path: Path, sqlite_url: str, counted_fleet: tuple[Any, list[int]]
) -> None:
    from consumers.backfill import local_requests, read_local, tag_requests
    from consumers.decode import DecodeLimits, decode_image
    from consumers.embeddings import open_embedding_sink
    from consumers.store import TagStore
    from models.embedding_store import open_embedding_store

    fleet, encoded = counted_fleet
    same = image_bytes(2)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for i in range(5):
        (first / f"copy-{i}.png").write_bytes(same)
    (first / "other.png").write_bytes(image_bytes(9))
    (second / "late-copy.png").write_bytes(same)
    store = TagStore(sqlite_url)
    store.upgrade()
    location = str(tmp_path / "embeddings")

    def run(folder: Path, *, reuse: bool = True) -> int:
        summary = tag_requests(
            list(local_requests(str(folder))),
            fleet,
            store,
            lambda request, reserve: read_local(request, 10**8, reserve),
            lambda data: decode_image(data, fleet.input_size, DecodeLimits()),
            batch_size=4,
            workers=2,
            progress=False,
            embeddings=open_embedding_sink(location),
            reuse=store.reusable_results if reuse else None,
        )
        assert not summary.failed
        return summary.tagged

    try:
        assert run(first) == 6
        assert sum(encoded) == 2  # the five copies once, and the other picture
        assert run(second) == 1  # a new run: nothing in memory, the store's results reused
        assert sum(encoded) == 2
        assert run(second, reuse=False) == 1  # without the store's answer the model runs
        assert sum(encoded) == 3

        copies = [f"file://{first}/copy-{i}.png" for i in range(5)]
        late = f"file://{second}/late-copy.png"
        versions = store.current_versions([*copies, late])
        assert set(versions) == {*copies, late}  # every copy has its results
        hashes = {a: r for a, r in _hashes(store, [*copies, late]).items()}
        assert set(hashes.values()) == {hashlib.sha256(same).hexdigest()}

        embeddings = open_embedding_store(location)
        (key,) = embeddings.backbones()
        vectors = embeddings.get(key, [*copies, late])
        assert set(vectors) == {*copies, late}  # reused ones copied, not missing
        reference = next(iter(vectors.values()))
        assert all(np.allclose(v, reference, atol=1e-2) for v in vectors.values())
    finally:
        store.close()


def test_reuse_results_off_runs_the_model_for_every_copy_even_in_one_batch(
    tmp_path: Path, sqlite_url: str, counted_fleet: tuple[Any, list[int]]
) -> None:
    """TAGFLEET_REUSE_RESULTS=false turns content-hash dedup off, the batch's and the recent
    results' too, not only the store's (it once left those on: the fault suite's kills at
    ``after_infer`` never came, its events cycling through 48 images)."""
    from consumers.backfill import local_requests, read_local, tag_requests
    from consumers.decode import DecodeLimits, decode_image
    from consumers.store import TagStore

    fleet, encoded = counted_fleet
    folder = tmp_path / "copies"
    folder.mkdir()
    for i in range(5):
        (folder / f"copy-{i}.png").write_bytes(image_bytes(2))
    store = TagStore(sqlite_url)
    store.upgrade()

    def run(*, dedup: bool) -> int:
        summary = tag_requests(
            list(local_requests(str(folder))),
            fleet,
            store,
            lambda request, reserve: read_local(request, 10**8, reserve),
            lambda data: decode_image(data, fleet.input_size, DecodeLimits()),
            batch_size=8,
            workers=2,
            progress=False,
            dedup=dedup,
        )
        assert not summary.failed
        return summary.tagged

    try:
        assert run(dedup=False) == 5
        assert sum(encoded) == 5  # each copy inferred
        assert run(dedup=False) == 5  # and again: nothing recent or stored reused
        assert sum(encoded) == 10
        assert run(dedup=True) == 5  # on: one copy runs, the others follow it
        assert sum(encoded) == 11
    finally:
        store.close()


def _hashes(store: Any, asset_ids: list[str]) -> dict[str, str]:
    import sqlalchemy as sa

    from consumers.store.models import assets

    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(assets.c.asset_id, assets.c.content_hash).where(
                assets.c.asset_id.in_(asset_ids)
            )
        )
        return {a: h for a, h in rows}


def test_the_store_does_not_reuse_a_result_of_an_objects_older_bytes(sqlite_url: str) -> None:
    """An object overwritten, the new bytes tagged for one function only: its other function's
    result is still the one of the old bytes, and may not stand for the new bytes."""
    from consumers.store import TagStore

    def both(etag: str, content_hash: str) -> AssetResult:
        first = _result("s3://b/x.png", content_hash)
        colours = {"type": "classify", "version": "bbbb", "label": "red", "score": 0.9}
        return replace(first, etag=etag, functions={**first.functions, "colours": colours})

    store = TagStore(sqlite_url)
    store.upgrade()
    try:
        store.save([both("e1", "h1")])
        newer = _result("s3://b/x.png", "h2")  # the new bytes, the event asked for shape only
        store.save([replace(newer, etag="e2")])
        found = store.reusable_results(["h1", "h2"])
        assert "h1" not in found  # the object holds other bytes now
        assert set(found["h2"].functions) == {"shape"}  # colours was made from h1's bytes
        assert not covers(
            Hit(found["h2"].asset_id, found["h2"].functions), {"shape": "aaaa", "colours": "bbbb"}
        )
    finally:
        store.close()


def test_a_reused_result_leaves_the_sources_tag_set_to_the_active_mapping() -> None:
    """A stored result carries the tag set the mapping active when it was written drew: the
    asset reusing it gets its tags from the mapping active now (the write stage draws them
    when one is; with the taxonomy cleared since, the model's own), not the source's."""
    tag_set = {"source": "model", "mapping_version": "m1", "tags": [{"label": "vehicle"}]}
    stored = {"type": "classify", "version": "aaaa", "label": "car", "score": 0.9}
    hit = Hit("s3://b/first.png", {"shape": {**stored, "tag_set": tag_set}})
    assert reused(hit, {"shape": "aaaa"}) == {
        "shape": {**stored, "reused_from": "s3://b/first.png"}
    }


def test_a_result_reused_for_another_tenant_does_not_name_that_tenants_asset(
    sqlite_url: str,
) -> None:
    """The same bytes in two tenants: the result may be reused (it is about the bytes), but
    the reused result objects (stored, shown by GET /v1/assets/{id}, published to the
    tenant's webhooks) name the source asset only when it is of the same tenant: another
    tenant's asset id would tell that tenant's key it exists."""
    from consumers.store import TagStore

    store = TagStore(sqlite_url)
    store.upgrade()
    try:
        store.save([replace(_result("s3://acme/secret-plan.png", "h1"), tenant="acme")])
        store.save([_result("s3://b/mine.png", "h2")])  # the default tenant's
        found = store.reusable_results(["h1", "h2"])
    finally:
        store.close()
    acme = Hit(found["h1"].asset_id, found["h1"].functions, tenant=found["h1"].tenant)
    for other in ("globex", None):
        copied = reused(acme, {"shape": "aaaa"}, other)
        assert "s3://acme/secret-plan.png" not in repr(copied)
        assert copied["shape"]["label"] == "x"  # still the bytes' result
    assert reused(acme, {"shape": "aaaa"}, "acme")["shape"]["reused_from"] == acme.asset_id
    mine = Hit(found["h2"].asset_id, found["h2"].functions, tenant=found["h2"].tenant)
    for same in (None, "default"):  # no tenant in the event: the default tenant
        assert reused(mine, {"shape": "aaaa"}, same)["shape"]["reused_from"] == "s3://b/mine.png"


def test_results_stored_without_embeddings_are_not_reused_once_embeddings_are_kept(
    tmp_path: Path, sqlite_url: str, counted_fleet: tuple[Any, list[int]]
) -> None:
    """A library tagged while embeddings were off (TAGFLEET_STORE_EMBEDDINGS=false, the
    chart without embeddings.location), then tagged again with them on: the stored results
    have no embedding to copy, so the model runs and every asset gets its embedding (reusing
    them left every asset without one, for good: each later run reused them again)."""
    from consumers.backfill import local_requests, read_local, tag_requests
    from consumers.decode import DecodeLimits, decode_image
    from consumers.embeddings import open_embedding_sink
    from consumers.store import TagStore
    from models.embedding_store import open_embedding_store

    fleet, encoded = counted_fleet
    folder = tmp_path / "library"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(image_bytes(i))
    store = TagStore(sqlite_url)
    store.upgrade()
    location = str(tmp_path / "embeddings")

    def run(*, kept: bool) -> None:
        summary = tag_requests(
            list(local_requests(str(folder))),
            fleet,
            store,
            lambda request, reserve: read_local(request, 10**8, reserve),
            lambda data: decode_image(data, fleet.input_size, DecodeLimits()),
            batch_size=4,
            workers=2,
            progress=False,
            embeddings=open_embedding_sink(location) if kept else None,
            reuse=store.reusable_results,
        )
        assert summary.tagged == 3 and not summary.failed

    try:
        run(kept=False)
        assert sum(encoded) == 3
        run(kept=True)
        assert sum(encoded) == 6  # nothing to copy: inferred again
        embeddings = open_embedding_store(location)
        (key,) = embeddings.backbones()
        ids = [f"file://{folder}/{i}.png" for i in range(3)]
        assert set(embeddings.get(key, ids)) == set(ids)
        run(kept=True)
        assert sum(encoded) == 6  # now they have them: reused, copied
    finally:
        store.close()


def test_a_reused_result_takes_the_place_the_fleet_serves_its_version_at(sqlite_url: str) -> None:
    """v1, v2, then a rollback to v1 (place 3 in the fleet's history): a result of v1 stored
    at place 1, reused for an asset whose current result is v2's (place 2), must become
    current as a fresh v1 result (place 3) would; with its stored place it was refused (an
    earlier place never replaces a later one) and the asset kept v2's tags for good."""
    from consumers.store import TagStore

    def shape(asset: str, version: str, place: int) -> AssetResult:
        first = _result(asset, "h1", version=version)
        return replace(first, functions={"shape": {**first.functions["shape"], "promotion": place}})

    store = TagStore(sqlite_url)
    store.upgrade()
    try:
        store.save([shape("s3://b/1-source.png", "v1", 1)])
        store.save([replace(shape("s3://b/2-late.png", "v2", 2), content_hash="h2")])
        found = store.reusable_results(["h1"])["h1"]
        hit = Hit(found.asset_id, found.functions, tenant=found.tenant)
        functions = reused(hit, {"shape": "v1"}, None, {"shape": 3})
        assert functions["shape"]["promotion"] == 3
        store.save([replace(_result("s3://b/2-late.png", "h1"), functions=functions)])
        late = "s3://b/2-late.png"
        assert store.current_versions([late]) == {late: {"shape": "v1"}}
        # a fleet without a history gives no place: neither does the reused result
        assert "promotion" not in reused(hit, {"shape": "v1"}, None, {})["shape"]
    finally:
        store.close()
