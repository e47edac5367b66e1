"""The store follows the fleet, not the last writer (issue 16 item 5), on SQLite and
PostgreSQL: a result of an earlier place in the promotion history never replaces the current
one; a rollback makes kept results current again without running a model; shadows are kept
apart; a removed function is marked no longer served, or purged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from store_factories import WriteProbe, classify, make_result, table_rows, tags_fn

from consumers.store import TagStore

A = "s3://bucket/a.jpg"
B = "s3://bucket/b.jpg"


def _placed(obj: dict[str, Any], place: int) -> dict[str, Any]:
    return {**obj, "promotion": place}


def _v(version: str, place: int, label: str) -> dict[str, dict[str, Any]]:
    return {"make": _placed(classify(version, label), place)}


def _kept(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            query = "SELECT asset_id, function, model_version, role FROM version_results"
            return sorted(tuple(r) for r in conn.exec_driver_sql(query))
    finally:
        engine.dispose()


def _labels(store: TagStore, asset: str, function: str = "make") -> list[tuple[str, str]]:
    rows = store.tags_for_asset(asset)
    return [(t.label, t.model_version) for t in rows if t.function == function]


def test_replaying_the_old_version_after_a_promotion_changes_no_row(
    store: TagStore, store_url: str, write_probe: Callable[[], WriteProbe]
) -> None:
    old = [make_result(a, _v("v1", 1, "honda")) for a in (A, B)]
    store.save(old)
    store.save([make_result(a, _v("v2", 2, "ford"), offset=20) for a in (A, B)])
    assert _labels(store, A) == [("ford", "v2")]
    before = table_rows(store_url)
    probe = write_probe()
    probe.mark()

    stats = store.save([replace(r, source=None) for r in old])  # a late replay of v1

    assert stats.replaced_functions == 0 and stats.inserted_tags == 0
    assert table_rows(store_url) == before
    assert probe.unchanged(), "a replay of the older version must not write a row"
    # a result of a version without a place (a hand-written fleet) still replaces as before
    store.save([make_result(A, {"make": classify("v3", "kia")}, offset=30)])
    assert _labels(store, A) == [("kia", "v3")]


def test_a_rollback_makes_the_kept_results_current_without_running_a_model(
    store: TagStore, store_url: str
) -> None:
    store.save([make_result(a, _v("v1", 1, "honda")) for a in (A, B)])
    store.save([make_result(A, _v("v2", 2, "ford"), offset=20)])  # B not seen by v2 yet
    assert _labels(store, A) == [("ford", "v2")]

    stats = store.follow_fleet({"make": ("v1", 3)}, {})  # fleet rollback: v1 at place 3

    assert stats.restored == 1  # A from its kept v1 result; B was current on v1 already
    assert _labels(store, A) == [("honda", "v1")] and _labels(store, B) == [("honda", "v1")]
    (tag,) = [t for t in store.tags_for_asset(A) if t.function == "make"]
    assert tag.source is not None and tag.source.offset == 7  # v1's own provenance
    # a pod still on v2 (place 2) cannot flip the rows back
    store.save([make_result(A, _v("v2", 2, "ford"), offset=21)])
    assert _labels(store, A) == [("honda", "v1")]
    # following the same fleet again changes nothing
    assert store.follow_fleet({"make": ("v1", 3)}, {}).restored == 0


def test_a_kept_result_of_other_bytes_is_not_restored(store: TagStore) -> None:
    store.save([make_result(A, _v("v1", 1, "honda"), etag="old")])
    store.save([make_result(A, _v("v2", 2, "ford"), etag="new", offset=20)])

    assert store.follow_fleet({"make": ("v1", 3)}, {}).restored == 0

    assert _labels(store, A) == [("ford", "v2")]  # v1 never saw these bytes: run it again


def test_shadow_results_are_kept_apart_and_paired_with_the_current_ones(
    store: TagStore, store_url: str
) -> None:
    result = make_result(A, _v("v1", 1, "honda"))
    store.save([replace(result, shadows={"make": classify("v9", "ford")})])

    assert _labels(store, A) == [("honda", "v1")]
    assert store.assets_with_label("ford", 0.0) == []
    assert ("s3://bucket/a.jpg", "make", "v9", "shadow") in _kept(store_url)
    ((asset, current, shadow),) = store.shadow_pairs("make")
    assert asset == A and current["label"] == "honda" and shadow["label"] == "ford"


def test_a_removed_function_is_marked_unserved_or_purged(store: TagStore, store_url: str) -> None:
    funcs = {"make": _placed(classify(), 1), "colour": _placed(tags_fn(), 1)}
    store.save([make_result(a, funcs) for a in (A, B)])

    stats = store.follow_fleet({}, {"make": True, "colour": False})

    assert stats.purged == 2 and stats.unserved == 2
    assert _labels(store, A) == [] and _labels(store, B) == []
    assert [r for r in _kept(store_url) if r[1] == "make"] == []
    assert [t.function for t in store.tags_for_asset(A)] == ["colour"]  # kept, unserved
    served = {r[1]: r for r in table_rows(store_url)["function_results"]}
    assert set(served) == {"colour"}


def test_fleet_remove_purge_then_db_follow_leaves_no_tag_of_the_function(
    store: TagStore,
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commands an operator runs with no service up: `tagfleet fleet remove --purge`, then
    `tagfleet db follow` (a running service does the same at its next reload)."""
    from consumers.cli import main
    from models.fleet import FleetConfig, FleetEntry, write_fleet_config

    funcs = {"make": _placed(classify(), 1), "colour": _placed(tags_fn(), 1)}
    store.save([make_result(a, funcs) for a in (A, B)])
    fleet = str(tmp_path / "fleet.yaml")
    entries = [FleetEntry(name=n, artifact=n) for n in ("make", "colour")]
    write_fleet_config(fleet, FleetConfig(functions=entries))
    monkeypatch.setenv("TAGFLEET_STORE", store_url)

    assert main(["fleet", "remove", "make", "--purge", "--fleet", fleet]) == 0
    assert main(["db", "follow", "--fleet", fleet]) == 0

    assert "2 purged" in capsys.readouterr().out
    assert _labels(store, A) == [] and _labels(store, B) == []
    assert [r for r in _kept(store_url) if r[1] == "make"] == []
    assert {t.function for t in store.tags_for_asset(A)} == {"colour"}
    (tmp_path / "broken.yaml").write_text("functions: [{name: x}]\n")
    assert main(["db", "follow", "--fleet", str(tmp_path / "broken.yaml")]) == 2


def test_promoting_the_shadow_makes_its_kept_results_the_tags(store: TagStore) -> None:
    result = make_result(A, _v("v1", 1, "honda"))
    store.save([replace(result, shadows={"make": classify("v9", "ford")})])

    stats = store.follow_fleet({"make": ("v9", 2)}, {})  # fleet promote make v9 (the shadow)

    assert stats.restored == 1
    assert _labels(store, A) == [("ford", "v9")]  # no model ran: the shadow's own result
