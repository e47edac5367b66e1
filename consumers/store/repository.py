"""``TagStore``: the metadata store's one public object (docs/architecture.md, "Store").

Writes are upserts keyed by the primary keys, with a ``WHERE`` that skips rows whose model
version and etag already match: reprocessing a result changes nothing, not even a timestamp.
Rows are written in key order (assets, then function results, then tags) so that two
consumers saving overlapping batches lock rows in the same order: on PostgreSQL the second
waits for the first, sees its result and skips; on SQLite writers queue on ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from consumers import failpoints
from consumers.domain import AssetResult, SourcePosition
from consumers.ports import StaleEvent
from consumers.sequencer import is_older
from consumers.store import migrate, tagsets
from consumers.store.engine import create_store_engine, writer
from consumers.store.errors import SchemaMissing, translate_errors
from consumers.store.models import assets, function_results, tags, version_results
from consumers.store.queries import assets_with_label_query, tags_for_asset_query
from consumers.store.reuse import ReusableResult, reusable_results
from consumers.store.rows import (
    FunctionKey,
    SaveStats,
    TagRow,
    asset_row,
    result_row,
    source_values,
    tag_row,
    tag_rows,
)
from consumers.store.tagsets import ActiveMapping, StoredResult
from consumers.store.versions import (
    SERVING,
    SHADOW,
    FollowStats,
    follow_fleet,
    is_earlier,
    keep_versions,
    shadow_pairs,
    stored_places,
    upsert_current,
    version_row,
)

_CHUNK = 500  # keys per statement: far below SQLite's and PostgreSQL's parameter limits
_T = TypeVar("_T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TagStore:
    """Tags and results of assets in PostgreSQL or SQLite.

    Every method runs in its own transaction and raises :class:`~consumers.domain.TransientError`
    for faults that may pass (server unreachable or gone, database locked, serialization
    failure, deadlock); other database errors (missing tables, integrity) propagate unchanged.
    Thread-safe: the engine's pool hands each call its own connection.
    """

    def __init__(
        self,
        url: str,
        *,
        sqlite_busy_timeout_ms: int = 5000,
        connect_timeout_s: int = 10,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """Build the engine (no connection is made, nothing is migrated)."""
        self.engine = create_store_engine(
            url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, connect_timeout_s=connect_timeout_s
        )
        self._writer = writer(self.engine)
        self._clock = clock

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    def upgrade(self, revision: str = "head") -> None:
        """Run the migrations up to ``revision`` (``tagfleet db upgrade``)."""
        with translate_errors("upgrade"):
            migrate.upgrade_engine(self.engine, revision)

    def ping(self) -> None:
        """Return when the database answers; raise ``TransientError`` when it does not."""
        with translate_errors("ping"), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def verify_schema(self) -> None:
        """Return when the database is at this code's migration head with its tables; raise
        :class:`SchemaMissing` when it is not, ``TransientError`` when it cannot be asked."""
        expected = migrate.head()
        with translate_errors("verify_schema"), self.engine.connect() as conn:
            revision = migrate.current_revision(conn)
            inspector = sa.inspect(conn)
            missing = [
                t.name for t in (assets, function_results, tags) if not inspector.has_table(t.name)
            ]
        if missing or revision != expected:
            raise SchemaMissing(
                f"the store is at revision {revision!r} (expected {expected!r}) and lacks the"
                f" tables {missing}; run `tagfleet db upgrade`"
            )

    def save(self, results: Sequence[AssetResult]) -> SaveStats:
        """Store ``results`` in one transaction; return what changed.

        Per (asset, function): the same model version and etag as stored is a no-op (no row
        is written); otherwise the result row is replaced and that function's tags are deleted
        and inserted again. Functions absent from a result are left alone. The asset row (uri,
        etag, size) is updated only when it differs, and a removed asset is restored. When the
        batch holds an asset or an (asset, function) more than once, its last occurrence counts
        (unless it is the older event).

        Order: a result whose ``sequencer`` is older than the one stored with its asset (a
        newer create or removal of the object was applied first) is not applied; its asset is
        listed in ``SaveStats.stale``. The asset rows are locked before they are compared
        (new ones inserted first), so two consumers saving two events of one object at once
        keep the newer. Raises ``ValueError`` (before any write) for a result object of
        unknown type.
        """
        latest_assets, latest = _collapse(results)
        if not latest_assets:
            return SaveStats()
        _failpoint(sorted(latest_assets))
        now = self._clock()
        with translate_errors("save"), self._writer.begin() as conn:
            order = _lock_assets(
                conn, [asset_row(latest_assets[a], now) for a in sorted(latest_assets)]
            )
            stale = tuple(
                a
                for a in sorted(latest_assets)
                if is_older(latest_assets[a].sequencer, order.get(a))
            )
            for a in stale:
                del latest_assets[a]
            latest = {k: v for k, v in latest.items() if k[0] in latest_assets}
            keys = sorted(latest)
            new_rows = {key: tag_rows(key, *latest[key]) for key in keys}
            stored_assets, stored_results = _stored_state(conn, sorted(latest_assets))
            candidates = [
                k
                for k in keys
                if stored_results.get(k) != _version_key(result_row(k, *latest[k], now))
            ]
            places = stored_places(conn, candidates)  # a later version's result stays
            candidates = [
                k
                for k in candidates
                if not is_earlier(latest[k][1].get("promotion"), places.get(k))
            ]
            touched = {a for a, _ in candidates}
            asset_rows = [
                row
                for a in sorted(latest_assets)
                if (
                    row := _ordered(
                        _hashed(asset_row(latest_assets[a], now), stored_assets.get(a)),
                        order.get(a),
                    )
                )["asset_id"]
                in touched
                or stored_assets.get(a) != _asset_key(row)
            ]
            # The asset rows first (locked even when unchanged), then results, then tags:
            # the order remove() locks in too.
            _upsert_assets(conn, asset_rows)
            written = upsert_current(conn, [result_row(k, *latest[k], now) for k in candidates])
            deleted = _delete_tags(conn, sorted(written))
            new_tags = [row for key in keys if key in written for row in new_rows[key]]
            if new_tags:
                conn.execute(sa.insert(tags), new_tags)
            keep_versions(conn, _kept(conn, latest, latest_assets, now))
        return SaveStats(
            inserted_tags=len(new_tags),
            deleted_tags=deleted,
            unchanged_functions=len(keys) - len(written),
            replaced_functions=len(written),
            stale=stale,
        )

    def remove(
        self,
        asset_ids: Sequence[str],
        source: SourcePosition | None,
        *,
        uri: str | None = None,
        sequencer: str | None = None,
    ) -> int:
        """Delete the assets' tags and results and mark them removed, recording ``source``.

        With ``uri``, only assets stored with that object URI are touched: a removal
        notification for one bucket's object cannot remove an asset whose object lives
        elsewhere. Returns how many of them were present and not yet removed; unknown or
        already removed ids are no-ops. A later :meth:`save` of the asset tags it again.

        With ``sequencer`` (the removal's order key) and ``uri``, an asset never stored gets a
        removed row with that key, so a create delivered after the removal it preceded is
        stale; an asset whose stored key is newer is left alone, and when every asset is,
        :class:`~consumers.ports.StaleEvent` is raised (nothing was changed).
        """
        ids = sorted(set(asset_ids))
        _failpoint(ids)
        removed = 0
        applied = older = 0
        with translate_errors("remove"), self._writer.begin() as conn:
            now = self._clock()
            if sequencer is not None and uri is not None:
                tombstones = [
                    {
                        "asset_id": a,
                        "uri": uri,
                        "removed": True,
                        "updated_at": now,
                        "sequencer": sequencer,
                        **source_values(source),
                    }
                    for a in ids
                ]
                _lock_assets(conn, tombstones)
            for all_ids in _chunks(ids):
                # Lock the asset rows first: the same order as save, so the two never deadlock.
                locked = conn.execute(
                    sa.select(assets.c.asset_id, assets.c.uri, assets.c.sequencer)
                    .where(assets.c.asset_id.in_(all_ids))
                    .order_by(assets.c.asset_id)
                    .with_for_update()
                ).all()
                ours = [(a, order) for a, stored, order in locked if uri is None or stored == uri]
                chunk = [a for a, order in ours if not is_older(sequencer, order)]
                applied, older = applied + len(chunk), older + len(ours) - len(chunk)
                removed += conn.execute(
                    sa.update(assets)
                    .where(assets.c.asset_id.in_(chunk), assets.c.removed.is_(False))
                    .values(removed=True, updated_at=now, **source_values(source))
                ).rowcount
                if sequencer is not None:
                    conn.execute(
                        sa.update(assets)
                        .where(
                            assets.c.asset_id.in_(chunk),
                            assets.c.sequencer.is_distinct_from(sequencer),
                        )
                        .values(sequencer=sequencer)
                    )
                conn.execute(sa.delete(tags).where(tags.c.asset_id.in_(chunk)))
                conn.execute(
                    sa.delete(function_results).where(function_results.c.asset_id.in_(chunk))
                )
                conn.execute(
                    sa.delete(version_results).where(version_results.c.asset_id.in_(chunk))
                )
        if older and not applied:
            raise StaleEvent(f"a newer event of {ids[0]!r} is stored")
        return removed

    def removed_later(self, asset_ids: Sequence[str], sequencer: str | None) -> bool:
        """Whether one of the assets is stored as removed by an event newer than
        ``sequencer``: a create whose object is gone because that removal ran is stale, not
        a missing object. False without a ``sequencer`` (an unordered event)."""
        if sequencer is None or not asset_ids:
            return False
        a = assets.c
        query = sa.select(a.sequencer).where(
            a.asset_id.in_(sorted(set(asset_ids))), a.removed.is_(True)
        )
        with translate_errors("removed_later"), self.engine.connect() as conn:
            return any(is_older(sequencer, order) for order in conn.scalars(query))

    def tags_for_asset(self, asset_id: str) -> list[TagRow]:
        """All current tags of one asset, ordered by function, label and ordinal."""
        query = tags_for_asset_query(asset_id)
        with translate_errors("tags_for_asset"), self.engine.connect() as conn:
            return [tag_row(row) for row in conn.execute(query).mappings()]

    def assets_with_label(
        self, label: str, min_score: float, function: str | None = None
    ) -> list[str]:
        """Ids of assets with a tag ``label`` scored ``>= min_score`` (by ``function`` if
        given), sorted.
        """
        query = assets_with_label_query(label, min_score, function)
        with translate_errors("assets_with_label"), self.engine.connect() as conn:
            return list(conn.scalars(query))

    def follow_fleet(
        self, serving: Mapping[str, tuple[str, int]], removed: Mapping[str, bool]
    ) -> FollowStats:
        """Follow a fleet's state, in one transaction, running no model
        (:func:`consumers.store.versions.follow_fleet`): ``serving`` maps a function to its
        serving version and that version's place in the promotion history; ``removed`` maps
        a function taken out of the fleet to whether it was purged."""
        with translate_errors("follow_fleet"), self._writer.begin() as conn:
            return follow_fleet(conn, serving, removed, self._clock())

    def shadow_pairs(
        self, function: str, version: str | None = None
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(asset, current result, shadow result) of every asset the shadow ``version`` (else
        the newest) of ``function`` saw on the bytes of the current result."""
        with translate_errors("shadow_pairs"), self.engine.connect() as conn:
            return shadow_pairs(conn, function, version)

    def stored_results(
        self, function: str, tenant: str | None, after: str, limit: int
    ) -> list[StoredResult]:
        """One page of ``function``'s served results past asset id ``after``, in asset id
        order, with their tag rows and human decisions (:func:`tagsets.read_results`)."""
        with translate_errors("stored_results"), self.engine.connect() as conn:
            return tagsets.read_results(conn, function, tenant, after, limit)

    def write_tag_sets(
        self,
        function: str,
        new_tags: Sequence[tuple[StoredResult, Sequence[Mapping[str, Any]]]],
        before_commit: Callable[[set[str]], None] | None = None,
    ) -> set[str]:
        """Replace tag sets in one transaction (:func:`tagsets.write_tag_sets`); returns the
        asset ids written (a result the consumer replaced since it was read is left alone).
        ``before_commit`` is called with them before the commit (an error rolls back)."""
        with translate_errors("write_tag_sets"), self._writer.begin() as conn:
            written = tagsets.write_tag_sets(conn, function, new_tags, self._clock())
            if before_commit is not None:
                before_commit(written)
            return written

    def active_mappings(self) -> dict[tuple[str, str], ActiveMapping]:
        """The active mappings by (function, tenant) (the taxonomy under function ``"*"``,
        every tenant's default under tenant ``"*"``)."""
        with translate_errors("active_mappings"), self.engine.connect() as conn:
            return tagsets.active_mappings(conn)

    def set_mapping(self, mapping: ActiveMapping) -> None:
        """Make ``mapping`` the active one of its function (or the taxonomy, ``"*"``) for its
        tenant (``"*"``: every tenant without its own)."""
        with translate_errors("set_mapping"), self._writer.begin() as conn:
            tagsets.set_mapping(conn, mapping)

    def clear_mapping(self, function: str, tenant: str = "*") -> bool:
        """Drop the active mapping of ``function`` (``"*"``: the taxonomy) for ``tenant``
        (``"*"``: the default); whether one was."""
        with translate_errors("clear_mapping"), self._writer.begin() as conn:
            return tagsets.clear_mapping(conn, function, tenant)

    def labelled_results(
        self, function: str, tenant: str | None
    ) -> list[tuple[dict[str, Any], str, str]]:
        """(result, label, decision) of people's decisions on ``function``'s results."""
        with translate_errors("labelled_results"), self.engine.connect() as conn:
            return list(tagsets.labelled_results(conn, function, tenant))

    def reusable_results(self, content_hashes: Sequence[str]) -> dict[str, ReusableResult]:
        """Per content hash: an asset stored with those bytes (not removed) and its current
        result objects by function (content-hash dedup: the caller checks their versions)."""
        with translate_errors("reusable_results"), self.engine.connect() as conn:
            return reusable_results(conn, content_hashes)

    def current_versions(self, asset_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """asset id -> function -> stored model version; assets without results are absent."""
        versions: dict[str, dict[str, str]] = {}
        fr = function_results.c
        with translate_errors("current_versions"), self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(asset_ids))):
                query = sa.select(fr.asset_id, fr.function, fr.model_version).where(
                    fr.asset_id.in_(chunk)
                )
                for asset_id, function, version in conn.execute(query):
                    versions.setdefault(asset_id, {})[function] = version
        return versions


def _kept(
    conn: sa.Connection,
    latest: dict[FunctionKey, tuple[AssetResult, dict[str, Any]]],
    latest_assets: dict[str, AssetResult],
    now: datetime,
) -> list[dict[str, Any]]:
    """The ``version_results`` rows of this save that are not stored yet as they are (every
    version's and every shadow's result is kept; a replay writes nothing)."""
    rows = [version_row(k, *latest[k], SERVING, now) for k in sorted(latest)]
    for asset_id, result in sorted(latest_assets.items()):
        rows += [
            version_row((asset_id, name), result, obj, SHADOW, now)
            for name, obj in sorted(result.shadows.items())
        ]
    if not rows:
        return []
    vr = version_results.c
    stored: set[tuple[Any, ...]] = set()
    for chunk in _chunks(sorted(latest_assets)):
        query = sa.select(vr.asset_id, vr.function, vr.model_version, vr.etag, vr.role).where(
            vr.asset_id.in_(chunk)
        )
        stored |= {tuple(row) for row in conn.execute(query)}
    key = ("asset_id", "function", "model_version", "etag", "role")
    return [row for row in rows if tuple(row[k] for k in key) not in stored]


def _failpoint(asset_ids: Sequence[str]) -> None:
    """The ``store`` failpoint: a database error nobody anticipated, for the matching assets."""
    try:
        failpoints.hit("store", asset_ids)
    except failpoints.FailpointError as exc:
        raise sa.exc.DatabaseError("INSERT (failpoint)", None, exc) from exc


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's ``INSERT`` with ``ON CONFLICT`` support."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database {conn.dialect.name!r}")


def _upsert(conn: sa.Connection, table: sa.Table, key: list[str], compare: list[str]) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE every column, only where ``compare`` differs."""
    stmt = _insert(conn, table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in key],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key},
        where=sa.or_(*(table.c[c].is_distinct_from(stmt.excluded[c]) for c in compare)),
    )


def _collapse(
    results: Sequence[AssetResult],
) -> tuple[dict[str, AssetResult], dict[FunctionKey, tuple[AssetResult, dict[str, Any]]]]:
    """The last result of each asset and the last result object of each (asset, function);
    a result of an older event than one already seen for its asset is passed over."""
    functions: dict[FunctionKey, tuple[AssetResult, dict[str, Any]]] = {}
    chosen: dict[str, AssetResult] = {}
    for r in results:
        seen = chosen.get(r.asset_id)
        if seen is not None and is_older(r.sequencer, seen.sequencer):
            continue
        chosen[r.asset_id] = r
        for name, obj in r.functions.items():
            functions[(r.asset_id, name)] = (r, obj)
    return chosen, functions


def _lock_assets(conn: sa.Connection, rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """Insert the asset rows that do not exist yet (as given), lock every one in key order and
    return each one's stored order key. A concurrent writer of a new asset waits on the
    inserted row, then reads the committed one: the comparison is made under the lock."""
    if not rows:
        return {}
    stmt = _insert(conn, assets).on_conflict_do_nothing(index_elements=[assets.c.asset_id])
    conn.execute(stmt, rows)
    order: dict[str, str | None] = {}
    for chunk in _chunks(sorted(row["asset_id"] for row in rows)):
        locked = conn.execute(
            sa.select(assets.c.asset_id, assets.c.sequencer)
            .where(assets.c.asset_id.in_(chunk))
            .order_by(assets.c.asset_id)
            .with_for_update()
        )
        order.update({a: o for a, o in locked})
    return order


def _ordered(row: dict[str, Any], stored: str | None) -> dict[str, Any]:
    """An unordered result (no sequencer) keeps the order key stored with its asset."""
    if row["sequencer"] is None:
        row["sequencer"] = stored
    return row


_ASSET_COMPARED = (
    "uri",
    "etag",
    "width",
    "height",
    "removed",
    "sequencer",
    "tenant",
    "content_hash",
)
_HASH = _ASSET_COMPARED.index("content_hash")


def _hashed(row: dict[str, Any], stored: tuple[Any, ...] | None) -> dict[str, Any]:
    """A result that knows no content hash (one not fetched by the pipeline) keeps the
    stored one."""
    if row["content_hash"] is None and stored is not None:
        row["content_hash"] = stored[_HASH]
    return row


_RESULT_COMPARED = ("model_version", "etag")


def _asset_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in _ASSET_COMPARED)


def _version_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in _RESULT_COMPARED)


def _stored_state(
    conn: sa.Connection, asset_ids: list[str]
) -> tuple[dict[str, tuple[Any, ...]], dict[FunctionKey, tuple[Any, ...]]]:
    """What is stored for these assets: the compared asset columns and result versions.

    Read before writing so that a replay sends no write at all; the upserts' WHERE clauses
    still decide, so a concurrent writer between this read and the upsert is harmless.
    """
    a, fr = assets.c, function_results.c
    stored_assets: dict[str, tuple[Any, ...]] = {}
    stored_results: dict[FunctionKey, tuple[Any, ...]] = {}
    for chunk in _chunks(asset_ids):
        query = sa.select(a.asset_id, *(a[c] for c in _ASSET_COMPARED)).where(a.asset_id.in_(chunk))
        for row in conn.execute(query):
            stored_assets[row[0]] = tuple(row[1:])
        query = sa.select(fr.asset_id, fr.function, *(fr[c] for c in _RESULT_COMPARED)).where(
            fr.asset_id.in_(chunk)
        )
        for row in conn.execute(query):
            stored_results[(row[0], row[1])] = tuple(row[2:])
    return stored_assets, stored_results


def _upsert_assets(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _upsert(conn, assets, ["asset_id"], list(_ASSET_COMPARED))
    conn.execute(stmt, rows)


def _delete_tags(conn: sa.Connection, keys: list[FunctionKey]) -> int:
    deleted = 0
    for chunk in _chunks(keys):
        condition = sa.tuple_(tags.c.asset_id, tags.c.function).in_(chunk)
        deleted += conn.execute(sa.delete(tags).where(condition)).rowcount
    return deleted


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
