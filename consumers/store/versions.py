"""The store follows the fleet (docs/lifecycle.md): which version's result is current.

Every result of every version is kept in ``version_results`` (a shadow's only there). A result
becomes current (``function_results`` and ``tags``) unless the current one comes from a later
place in the fleet's promotion history (``promotion``): a late replay of an older version, or
a second group still on it, cannot flip rows back. Results without a place (fleets written
by hand, without a history) replace as before: a different version or etag replaces.
:func:`follow_fleet` applies a fleet's state without running any model: the serving version's
kept results become current again (a rollback), removed functions are marked no longer
served or purged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from consumers.domain import AssetResult, SourcePosition
from consumers.store.models import assets, function_results, tags, version_results
from consumers.store.rows import FunctionKey, source_values, tag_rows

_CHUNK = 500
_T = TypeVar("_T")
SERVING, SHADOW = "serving", "shadow"


@dataclass(frozen=True, slots=True)
class FollowStats:
    """What :func:`follow_fleet` changed: results made current again from kept ones (no
    model run), functions marked no longer served, rows purged."""

    restored: int = 0
    unserved: int = 0
    purged: int = 0


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def version_row(
    key: FunctionKey, r: AssetResult, obj: dict[str, Any], role: str, now: datetime
) -> dict[str, Any]:
    """The ``version_results`` row of one function's (or shadow's) result object."""
    return {
        "asset_id": key[0],
        "function": key[1],
        "model_version": obj["version"],
        "role": role,
        "type": obj["type"],
        "etag": r.etag,
        "result": obj,
        "processed_at": r.processed_at,
        "stored_at": now,
        **source_values(r.source),
    }


def keep_versions(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert kept results; the same version and etag again writes nothing."""
    if not rows:
        return
    vr = version_results.c
    stmt = _insert(conn, version_results)
    stmt = stmt.on_conflict_do_update(
        index_elements=[vr.asset_id, vr.function, vr.model_version],
        set_={c.name: stmt.excluded[c.name] for c in version_results.columns if not c.primary_key},
        where=sa.or_(
            vr.etag.is_distinct_from(stmt.excluded.etag),
            vr.role.is_distinct_from(stmt.excluded.role),
        ),
    )
    for chunk in _chunks(sorted(rows, key=lambda r: (r["asset_id"], r["function"]))):
        conn.execute(stmt, list(chunk))


def upsert_current(conn: sa.Connection, rows: list[dict[str, Any]]) -> set[FunctionKey]:
    """Upsert ``function_results`` rows where the version or etag differs and the stored
    result is not from a later place in the promotion history; return the keys written."""
    if not rows:
        return set()
    fr = function_results.c
    stmt = _insert(conn, function_results)
    keys = ("asset_id", "function")
    excluded = stmt.excluded
    later_stored = sa.and_(
        fr.promotion.is_not(None),
        excluded.promotion.is_not(None),
        fr.promotion > excluded.promotion,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[fr.asset_id, fr.function],
        set_={c.name: excluded[c.name] for c in function_results.columns if c.name not in keys},
        where=sa.and_(
            sa.or_(
                fr.model_version.is_distinct_from(excluded.model_version),
                fr.etag.is_distinct_from(excluded.etag),
                fr.promotion.is_distinct_from(excluded.promotion),
            ),
            sa.not_(later_stored),
        ),
    )
    written = conn.execute(stmt.returning(fr.asset_id, fr.function), rows)
    return {(a, f) for a, f in written}


def stored_places(conn: sa.Connection, keys: list[FunctionKey]) -> dict[FunctionKey, int | None]:
    """The stored promotion place of each (asset, function) that has a current result."""
    fr = function_results.c
    places: dict[FunctionKey, int | None] = {}
    for chunk in _chunks(keys):
        query = sa.select(fr.asset_id, fr.function, fr.promotion).where(
            sa.tuple_(fr.asset_id, fr.function).in_(chunk)
        )
        places.update({(a, f): p for a, f, p in conn.execute(query)})
    return places


def is_earlier(new: int | None, stored: int | None) -> bool:
    """Whether a result of place ``new`` must not replace one of place ``stored``."""
    return new is not None and stored is not None and new < stored


def follow_fleet(
    conn: sa.Connection,
    serving: Mapping[str, tuple[str, int]],
    removed: Mapping[str, bool],
    now: datetime,
) -> FollowStats:
    """Make the store follow a fleet: ``serving`` (function -> (version, place)) and
    ``removed`` (function -> purge). Runs no model: a serving version's kept results of the
    assets' current bytes (same etag) become current; functions removed are marked no longer
    served, or purged (every result, kept or current, and every tag)."""
    restored = unserved = purged = 0
    fr, vr, a = function_results.c, version_results.c, assets.c
    for function, (version, place) in sorted(serving.items()):
        conn.execute(
            sa.update(function_results)
            .where(fr.function == function, fr.model_version == version)
            .where(sa.or_(fr.promotion.is_(None), fr.promotion < place, fr.served.is_(False)))
            .values(promotion=place, served=True)
        )
        query = (
            sa.select(vr.asset_id, vr.etag, vr.result, vr.processed_at, *_source_columns(vr))
            .join(function_results, sa.and_(fr.asset_id == vr.asset_id, fr.function == vr.function))
            .join(assets, a.asset_id == vr.asset_id)
            .where(vr.function == function, vr.model_version == version)
            .where(fr.model_version != version, a.etag.is_not_distinct_from(vr.etag))
            .where(sa.or_(fr.promotion.is_(None), fr.promotion < place))
            .order_by(vr.asset_id)
        )
        for row in conn.execute(query).mappings().all():
            restored += _make_current(conn, function, row, place, now)
    purge = sorted(f for f, p in removed.items() if p)
    keep = sorted(f for f, p in removed.items() if not p)
    if keep:
        unserved = conn.execute(
            sa.update(function_results)
            .where(fr.function.in_(keep), fr.served.is_(True))
            .values(served=False)
        ).rowcount
    if purge:
        conn.execute(sa.delete(tags).where(tags.c.function.in_(purge)))
        purged = conn.execute(sa.delete(function_results).where(fr.function.in_(purge))).rowcount
        conn.execute(sa.delete(version_results).where(vr.function.in_(purge)))
    return FollowStats(restored=restored, unserved=unserved, purged=purged)


def _source_columns(vr: Any) -> list[Any]:
    return [vr.source_topic, vr.source_partition, vr.source_offset]


def _make_current(conn: sa.Connection, function: str, row: Any, place: int, now: datetime) -> int:
    """A kept result made current (its row and its tags), at the fleet's ``place``."""
    obj = dict(row["result"])
    obj["promotion"] = place
    source = (
        SourcePosition(row["source_topic"], row["source_partition"], row["source_offset"])
        if row["source_topic"] is not None
        else None
    )
    fr = function_results.c
    key = (row["asset_id"], function)
    conn.execute(
        sa.update(function_results)
        .where(fr.asset_id == key[0], fr.function == function)
        .values(
            model_version=obj["version"],
            etag=row["etag"],
            result=obj,
            processed_at=row["processed_at"],
            stored_at=now,
            promotion=place,
            served=True,
            **source_values(source),
        )
    )
    conn.execute(sa.delete(tags).where(tags.c.asset_id == key[0], tags.c.function == function))
    fake = AssetResult(
        asset_id=key[0],
        uri="",
        etag=row["etag"],
        width=0,
        height=0,
        functions={},
        source=source,
        processed_at=row["processed_at"],
    )
    rows = tag_rows(key, fake, obj)
    if rows:
        conn.execute(sa.insert(tags), rows)
    return 1


def shadow_pairs(
    conn: sa.Connection, function: str, version: str | None
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(asset, serving result, shadow result) for every asset both saw on the same bytes:
    the shadow ``version`` (else the newest shadow version kept) against the current result."""
    fr, vr = function_results.c, version_results.c
    if version is None:
        newest = (
            sa.select(vr.model_version)
            .where(vr.function == function, vr.role == SHADOW)
            .order_by(vr.stored_at.desc())
            .limit(1)
        )
        version = conn.execute(newest).scalar()
        if version is None:
            return []
    query = (
        sa.select(vr.asset_id, fr.result, vr.result.label("shadow"))
        .join(function_results, sa.and_(fr.asset_id == vr.asset_id, fr.function == vr.function))
        .where(vr.function == function, vr.model_version == version, vr.role == SHADOW)
        .where(fr.etag.is_not_distinct_from(vr.etag))
        .order_by(vr.asset_id)
    )
    return [(a, dict(cur), dict(sh)) for a, cur, sh in conn.execute(query)]
