"""The store's side of retag (consumers.retag): stored results in key order, tag sets written
back, the active mappings and the human labels that calibrate thresholds.

Every function takes an open connection; :class:`~consumers.store.TagStore` owns the
transactions. Nothing here knows what a threshold or a taxonomy does (consumers.retag does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from consumers.store.models import assets, function_results, human_labels, tag_mappings, tags

TAXONOMY_SCOPE = "*"  # the tag_mappings row of the taxonomy every function goes through
ALL_TENANTS = "*"  # the tag_mappings rows of every tenant without rows of its own

StoredTag = tuple[str, float, tuple[float, ...] | None]  # label, score, box


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One function's current result of one asset, with what is shown of it now."""

    asset_id: str
    tenant: str
    uri: str
    etag: str | None
    width: int | None
    height: int | None
    model_version: str
    result: dict[str, Any]
    stored_at: datetime
    source: tuple[str | None, int | None, int | None]
    tags: tuple[StoredTag, ...]  # the current tag rows
    mapping_versions: frozenset[str | None]  # of the current tag rows
    decisions: Mapping[str, str]  # label -> present | absent (people's)


@dataclass(frozen=True, slots=True)
class ActiveMapping:
    """One ``tag_mappings`` row: ``tenant`` :data:`ALL_TENANTS` is the default of every
    tenant without a row of its own for ``function``."""

    function: str
    taxonomy: dict[str, Any] | None
    thresholds: dict[str, float]
    version: str
    set_at: datetime
    tenant: str = ALL_TENANTS


def read_results(
    conn: sa.Connection, function: str, tenant: str | None, after: str, limit: int
) -> list[StoredResult]:
    """Up to ``limit`` served results of ``function`` on assets past ``after`` (asset id
    order; removed assets skipped), with their tag rows and human decisions."""
    fr, a = function_results.c, assets.c
    query = (
        sa.select(
            fr.asset_id,
            fr.result,
            fr.model_version,
            fr.stored_at,
            fr.source_topic,
            fr.source_partition,
            fr.source_offset,
            a.tenant,
            a.uri,
            a.etag,
            a.width,
            a.height,
        )
        .select_from(function_results.join(assets, fr.asset_id == a.asset_id))
        .where(
            fr.function == function,
            fr.asset_id > after,
            fr.served.is_(True),
            a.removed.is_(False),
        )
        .order_by(fr.asset_id)
        .limit(limit)
    )
    if tenant is not None:
        query = query.where(a.tenant == tenant)
    rows = conn.execute(query).all()
    if not rows:
        return []
    ids = [r.asset_id for r in rows]
    t = tags.c
    shown: dict[str, list[StoredTag]] = {}
    versions: dict[str, set[str | None]] = {}
    tag_query = sa.select(t.asset_id, t.label, t.score, t.x1, t.y1, t.x2, t.y2, t.mapping_version)
    for r in conn.execute(
        tag_query.where(t.function == function, t.asset_id.in_(ids)).order_by(
            t.asset_id, t.label, t.ordinal
        )
    ):
        box = None if r.x1 is None else (r.x1, r.y1, r.x2, r.y2)
        shown.setdefault(r.asset_id, []).append((r.label, r.score, box))
        versions.setdefault(r.asset_id, set()).add(r.mapping_version)
    h = human_labels.c
    decisions: dict[str, dict[str, str]] = {}
    for asset_id, label, decision in conn.execute(
        sa.select(h.asset_id, h.label, h.decision).where(
            h.function == function, h.asset_id.in_(ids)
        )
    ):
        decisions.setdefault(asset_id, {})[label] = decision
    return [
        StoredResult(
            asset_id=r.asset_id,
            tenant=r.tenant,
            uri=r.uri,
            etag=r.etag,
            width=r.width,
            height=r.height,
            model_version=r.model_version,
            result=r.result,
            stored_at=r.stored_at,
            source=(r.source_topic, r.source_partition, r.source_offset),
            tags=tuple(shown.get(r.asset_id, ())),
            mapping_versions=frozenset(versions.get(r.asset_id, set())),
            decisions=decisions.get(r.asset_id, {}),
        )
        for r in rows
    ]


def write_tag_sets(
    conn: sa.Connection,
    function: str,
    new_tags: Sequence[tuple[StoredResult, Sequence[Mapping[str, Any]]]],
    now: datetime,
) -> set[str]:
    """Replace the tag rows of ``function`` on each asset by ``new_tags`` (tag rows without
    the key, time and Kafka columns), where the result is still the one read (same
    ``stored_at``: a result the consumer wrote since is left as it wrote it). The results
    are locked first, in key order. Returns the asset ids written."""
    if not new_tags:
        return set()
    fr = function_results.c
    read = {s.asset_id: s for s, _ in new_tags}
    locked = conn.execute(
        sa.select(fr.asset_id, fr.stored_at)
        .where(fr.function == function, fr.asset_id.in_(sorted(read)))
        .order_by(fr.asset_id)
        .with_for_update()
    ).all()
    current = {a for a, stored_at in locked if stored_at == read[a].stored_at}
    if not current:
        return current
    conn.execute(
        sa.delete(tags).where(tags.c.function == function, tags.c.asset_id.in_(sorted(current)))
    )
    rows = []
    for stored, entries in new_tags:
        if stored.asset_id not in current:
            continue
        topic, partition, offset = stored.source
        for entry in entries:
            rows.append(
                {
                    **entry,
                    "asset_id": stored.asset_id,
                    "function": function,
                    "model_version": stored.model_version,
                    "created_at": now,
                    "source_topic": topic,
                    "source_partition": partition,
                    "source_offset": offset,
                }
            )
    _insert_tags(conn, rows)
    return current


# tags' columns with their PostgreSQL array types, for one INSERT ... SELECT FROM unnest(...)
_TAG_COLUMNS = {
    "asset_id": "text",
    "function": "text",
    "label": "text",
    "ordinal": "int4",
    "score": "float8",
    "threshold": "float8",
    "x1": "float8",
    "y1": "float8",
    "x2": "float8",
    "y2": "float8",
    "model_version": "text",
    "created_at": "timestamptz",
    "tag_source": "text",
    "mapping_version": "text",
    "source_topic": "text",
    "source_partition": "int4",
    "source_offset": "int8",
}


def _insert_tags(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Insert tag rows: on PostgreSQL one statement per page (columns sent as arrays and
    unnested: a round trip instead of one per row); elsewhere an executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(tags), rows)
        return
    assert set(_TAG_COLUMNS) == {c.name for c in tags.columns}, "tags' columns changed"
    names = ", ".join(_TAG_COLUMNS)
    arrays = ", ".join(f"%({c})s::{t}[]" for c, t in _TAG_COLUMNS.items())
    conn.exec_driver_sql(
        f"INSERT INTO tags ({names}) SELECT * FROM unnest({arrays})",  # noqa: S608 - fixed names
        {c: [row[c] for row in rows] for c in _TAG_COLUMNS},
    )


def active_mappings(conn: sa.Connection) -> dict[tuple[str, str], ActiveMapping]:
    """Every ``tag_mappings`` row by (function, tenant) (the taxonomy under
    :data:`TAXONOMY_SCOPE`, the default of every tenant under :data:`ALL_TENANTS`)."""
    return {
        (r.function, r.tenant): ActiveMapping(
            r.function, r.taxonomy, dict(r.thresholds), r.version, r.set_at, r.tenant
        )
        for r in conn.execute(sa.select(tag_mappings))
    }


def set_mapping(conn: sa.Connection, mapping: ActiveMapping) -> None:
    """Insert or replace one ``tag_mappings`` row (its key: function and tenant)."""
    row = {
        "function": mapping.function,
        "tenant": mapping.tenant,
        "taxonomy": mapping.taxonomy,
        "thresholds": mapping.thresholds,
        "version": mapping.version,
        "set_at": mapping.set_at,
    }
    stmt: Any = (
        postgresql.insert(tag_mappings)
        if conn.dialect.name == "postgresql"
        else sqlite.insert(tag_mappings)
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[tag_mappings.c.function, tag_mappings.c.tenant],
            set_={k: stmt.excluded[k] for k in row if k not in ("function", "tenant")},
        ),
        [row],
    )


def clear_mapping(conn: sa.Connection, function: str, tenant: str = ALL_TENANTS) -> bool:
    """Delete one ``tag_mappings`` row; whether there was one."""
    m = tag_mappings.c
    deleted = conn.execute(
        sa.delete(tag_mappings).where(m.function == function, m.tenant == tenant)
    )
    return bool(deleted.rowcount)


def labelled_results(
    conn: sa.Connection, function: str, tenant: str | None
) -> Iterable[tuple[dict[str, Any], str, str]]:
    """(stored result, label, decision) of every human decision on ``function`` whose asset
    has a served result of it: the ground truth that ``--target-precision`` calibrates on."""
    fr, h, a = function_results.c, human_labels.c, assets.c
    query = (
        sa.select(fr.result, h.label, h.decision)
        .select_from(
            human_labels.join(
                function_results, (fr.asset_id == h.asset_id) & (fr.function == h.function)
            ).join(assets, a.asset_id == h.asset_id)
        )
        .where(h.function == function, fr.served.is_(True), a.removed.is_(False))
    )
    if tenant is not None:
        query = query.where(a.tenant == tenant)
    for row in conn.execute(query):
        yield row.result, row.label, row.decision
