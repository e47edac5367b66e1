"""TagStore behaviours on SQLite and PostgreSQL: idempotence, replacement, removal,
provenance, queries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from store_factories import T0, WriteProbe, classify, detect, make_result, table_rows, tags_fn

from consumers.domain import SourcePosition
from consumers.store import SaveStats, TagStore
from consumers.store.errors import SchemaMissing

A = "s3://bucket/a.jpg"
B = "s3://bucket/dir/b c.jpg"


def test_same_results_twice_change_nothing(
    store: TagStore, store_url: str, write_probe: Callable[[], WriteProbe]
) -> None:
    first = store.save([make_result(A), make_result(B)])
    assert first == SaveStats(inserted_tags=10, deleted_tags=0, replaced_functions=6)
    before = table_rows(store_url)
    probe = write_probe()
    probe.mark()

    # Replayed from another offset, later: still the same version and etag.
    again = store.save([make_result(A, offset=99, minutes=5), make_result(B, offset=100)])

    assert again == SaveStats(unchanged_functions=6)
    assert table_rows(store_url) == before
    assert probe.unchanged(), "a replayed result must not write a single row"


def test_provenance_is_stored_with_every_tag(store: TagStore) -> None:
    store.save([make_result(A)])

    tags = store.tags_for_asset(A)

    assert [(t.function, t.label, t.ordinal) for t in tags] == [
        ("colour", "red", 0),
        ("logos", "cup", 0),
        ("logos", "logo", 0),
        ("logos", "logo", 1),
        ("make", "honda", 0),
    ]
    red, cup, logo0, logo1, honda = tags
    assert red.score == pytest.approx(0.88) and red.threshold == pytest.approx(0.5)
    assert red.box is None and honda.threshold is None
    assert logo0.box == (0.0, 5.0, 8.0, 25.5) and logo1.box == (10.0, 5.0, 18.0, 25.5)
    assert cup.score == pytest.approx(0.6)
    for tag in tags:
        assert tag.model_version == "v1"
        assert tag.source == SourcePosition("assets", 2, 7)
        assert tag.created_at == T0 and tag.created_at.tzinfo is not None


def test_new_version_replaces_only_that_function(
    store: TagStore, store_url: str, write_probe: Callable[[], WriteProbe]
) -> None:
    store.save([make_result(A)])
    before = table_rows(store_url)
    probe = write_probe()
    probe.mark()

    stats = store.save(
        [make_result(A, {"logos": detect("v2", ("shelf", 0.8))}, offset=8, minutes=1)]
    )

    assert stats == SaveStats(inserted_tags=1, deleted_tags=3, replaced_functions=1)
    assert not probe.unchanged(), "the probe must see real writes"
    tags = store.tags_for_asset(A)
    logos = [t for t in tags if t.function == "logos"]
    assert [(t.label, t.model_version, t.source) for t in logos] == [
        ("shelf", "v2", SourcePosition("assets", 2, 8))
    ]
    assert store.current_versions([A]) == {A: {"make": "v1", "colour": "v1", "logos": "v2"}}
    after = table_rows(store_url)
    untouched = [r for r in before["tags"] if r[1] != "logos"]
    assert [r for r in after["tags"] if r[1] != "logos"] == untouched


def test_new_etag_replaces_tags_of_the_same_version(store: TagStore) -> None:
    store.save([make_result(A, {"make": classify("v1", "honda")})])

    stats = store.save([make_result(A, {"make": classify("v1", "ford")}, etag="etag-2")])

    assert stats == SaveStats(inserted_tags=1, deleted_tags=1, replaced_functions=1)
    assert [t.label for t in store.tags_for_asset(A)] == ["ford"]


def test_raw_result_keeps_every_score(store: TagStore, store_url: str) -> None:
    result = tags_fn(red=0.88, blue=0.02, green=0.4)
    store.save([make_result(A, {"colour": result})])

    rows = table_rows(store_url)["function_results"]

    assert len(rows) == 1
    stored = rows[0][5]
    stored = stored if isinstance(stored, dict) else __import__("json").loads(stored)
    assert stored == result
    assert [t.label for t in store.tags_for_asset(A)] == ["red"]


def test_removal_deletes_tags_and_a_later_create_tags_again(
    store: TagStore, write_probe: Callable[[], WriteProbe]
) -> None:
    store.save([make_result(A), make_result(B)])

    assert store.remove([A, "s3://bucket/never-seen"], SourcePosition("assets", 2, 50)) == 1

    assert store.tags_for_asset(A) == []
    assert store.current_versions([A, B]).keys() == {B}
    assert store.assets_with_label("honda", 0.5) == [B]
    probe = write_probe()
    probe.mark()
    assert store.remove([A], SourcePosition("assets", 2, 50)) == 0
    assert probe.unchanged(), "removing a removed asset again must not write"

    stats = store.save([make_result(A, offset=60)])

    assert stats.replaced_functions == 3 and stats.inserted_tags == 5
    assert {t.source for t in store.tags_for_asset(A)} == {SourcePosition("assets", 2, 60)}
    assert store.assets_with_label("honda", 0.5) == [A, B]


def test_a_removal_touches_only_the_asset_of_its_own_object(store: TagStore) -> None:
    """A removal notification names an object; an asset whose id looks like that object's
    URI but whose object lives elsewhere (a native event under TAGFLEET_ASSET_ID_BINDING=any)
    keeps its tags."""
    elsewhere = replace(make_result(A), uri="s3://other-bucket/x.jpg")
    store.save([elsewhere, make_result(B)])
    position = SourcePosition("assets", 2, 90)

    assert store.remove([A], position, uri=A) == 0
    assert store.remove([B], position, uri=B) == 1

    assert store.tags_for_asset(A) != [] and store.tags_for_asset(B) == []


def test_verify_schema_names_the_command_to_run(store_url: str) -> None:
    fresh = TagStore(store_url)
    try:
        with pytest.raises(SchemaMissing, match="tagfleet db upgrade"):
            fresh.verify_schema()
        fresh.upgrade()
        fresh.verify_schema()
    finally:
        fresh.close()


def test_label_query(store: TagStore) -> None:
    store.save(
        [
            make_result(A, {"make": classify(label="honda", score=0.93)}),
            make_result(B, {"make": classify(label="honda", score=0.6)}),
            make_result("s3://bucket/c", {"make": classify(label="ford", score=0.99)}),
            make_result("s3://bucket/d", {"logos": detect("v1", ("honda", 0.95))}),
        ]
    )

    assert store.assets_with_label("honda", 0.9) == [A, "s3://bucket/d"]
    assert store.assets_with_label("honda", 0.6) == [A, "s3://bucket/d", B]
    assert store.assets_with_label("honda", 0.9, function="make") == [A]
    assert store.assets_with_label("honda", 0.96) == []
    assert store.assets_with_label("nothing", 0.0) == []


def test_asset_query_and_current_versions(store: TagStore) -> None:
    store.save([make_result(A), make_result(B, {"make": classify("v7")})])

    assert [t.asset_id for t in store.tags_for_asset(B)] == [B]
    assert store.tags_for_asset("s3://bucket/unknown") == []
    assert store.current_versions([A, B, "s3://x/unknown"]) == {
        A: {"make": "v1", "colour": "v1", "logos": "v1"},
        B: {"make": "v7"},
    }
    assert store.current_versions([]) == {}


def test_batch_with_the_same_asset_twice_keeps_the_later(store: TagStore) -> None:
    stats = store.save(
        [
            make_result(A, {"make": classify("v1", "honda"), "colour": tags_fn()}),
            make_result(A, {"make": classify("v2", "ford")}, offset=8),
        ]
    )

    assert stats.replaced_functions == 2
    assert store.current_versions([A]) == {A: {"make": "v2", "colour": "v1"}}
    assert [t.label for t in store.tags_for_asset(A) if t.function == "make"] == ["ford"]


def test_unknown_result_type_writes_nothing(store: TagStore, store_url: str) -> None:
    bad = make_result(B, {"odd": {"type": "segment", "version": "v1"}})

    with pytest.raises(ValueError, match="segment"):
        store.save([make_result(A), bad])

    assert table_rows(store_url) == {"assets": [], "function_results": [], "tags": []}


def test_empty_calls_are_no_ops(store: TagStore) -> None:
    assert store.save([]) == SaveStats()
    assert store.remove([], None) == 0
    store.ping()


def test_asset_row_tracks_the_latest_object(store: TagStore, store_url: str) -> None:
    store.save([make_result(A, etag="etag-1")])
    store.save([make_result(A, etag="etag-2", offset=9)])

    (asset,) = table_rows(store_url)["assets"]

    asset_id, uri, etag, width, height, removed, _at, *source, _seq, tenant, _hash = asset
    assert (asset_id, uri, etag, width, height) == (A, A, "etag-2", 4000, 3000)
    assert not removed and source == ["assets", 2, 9]
    assert tenant == "default"  # the result named no tenant


def test_naive_datetimes_are_refused(store: TagStore) -> None:
    naive = make_result(A)
    object.__setattr__(naive, "processed_at", datetime(2026, 1, 1))  # noqa: DTZ001

    with pytest.raises(Exception, match="naive datetime"):
        store.save([naive])
    assert store.tags_for_asset(A) == []
    assert datetime.now(UTC) > T0
