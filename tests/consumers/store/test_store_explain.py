"""The two main queries use their indexes (EXPLAIN) on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from store_factories import classify, detect, make_result, tags_fn

from consumers.store import TagStore
from consumers.store.queries import assets_with_label_query, tags_for_asset_query

ASSETS = 2000
LABELS = [f"label-{i}" for i in range(50)]


def _fill(store: TagStore) -> None:
    results = []
    for i in range(ASSETS):
        functions = {
            "make": classify(label=LABELS[i % len(LABELS)], score=(i % 97) / 97),
            "colour": tags_fn(red=0.9, blue=0.6),
            "logos": detect("v1", ("logo", 0.9), ("logo", 0.8)),
        }
        results.append(make_result(f"s3://bucket/{i:05d}.jpg", functions))
    store.save(results)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def _plan(store: TagStore, query: sa.Select) -> str:  # type: ignore[type-arg]
    """The plan of the statement exactly as the store sends it, with bound parameters."""
    dialect = store.engine.dialect
    compiled = query.compile(dialect=dialect)
    params = compiled.params
    args = tuple(params[n] for n in compiled.positiontup) if compiled.positiontup else params
    explain = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(explain + str(compiled), args).all()
    return "\n".join(str(row[-1]) for row in rows)


def test_label_query_uses_a_label_index(store: TagStore) -> None:
    _fill(store)

    for function in (None, "make"):
        plan = _plan(store, assets_with_label_query("label-7", 0.5, function))
        # (label, score) as a range, or (label, asset_id) already in the order asked for
        assert "ix_tags_label_score" in plan or "ix_tags_label_asset_id" in plan, plan
        assert "Seq Scan" not in plan and "SCAN tags" not in plan, plan
    assert len(store.assets_with_label("label-7", 0.0)) == ASSETS // len(LABELS)


def test_asset_query_uses_the_primary_key(store: TagStore) -> None:
    _fill(store)

    plan = _plan(store, tags_for_asset_query("s3://bucket/00042.jpg"))

    pk_index = "pk_tags" if store.engine.dialect.name == "postgresql" else "sqlite_autoindex_tags"
    assert pk_index in plan, plan
    assert "Seq Scan" not in plan and "SCAN tags" not in plan, plan
    assert len(store.tags_for_asset("s3://bucket/00042.jpg")) == 5
