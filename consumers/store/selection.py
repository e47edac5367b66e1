"""What a backfill needs of the store: the ETags its results were computed from (``--changed``)
and dropping one function's results (``tagfleet reset``), so that the next ``--missing-only``
backfill computes them again (docs/store.md, "Backfill modes")."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from consumers.store.errors import translate_errors
from consumers.store.models import function_results, tags, version_results

_CHUNK = 500


def stored_etags(
    engine: sa.Engine, asset_ids: Sequence[str], functions: Sequence[str] | None = None
) -> dict[str, set[str | None]]:
    """asset id -> the ETags of its current results (of ``functions`` when given; every
    function's otherwise). Assets without a result are absent."""
    fr = function_results.c
    found: dict[str, set[str | None]] = {}
    ids = sorted(set(asset_ids))
    with translate_errors("stored_etags"), engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            query = sa.select(fr.asset_id, fr.etag).where(
                fr.asset_id.in_(ids[start : start + _CHUNK])
            )
            if functions:
                query = query.where(fr.function.in_(list(functions)))
            for asset_id, etag in conn.execute(query):
                found.setdefault(asset_id, set()).add(etag)
    return found


def reset_function(engine: sa.Engine, function: str) -> dict[str, int]:
    """Delete every stored result of ``function``: its tags, its current results and every
    version's kept result (people's decisions stay). Returns the rows deleted per table."""
    counts: dict[str, int] = {}
    with translate_errors("reset_function"), engine.begin() as conn:
        for table in (tags, function_results, version_results):
            done = conn.execute(sa.delete(table).where(table.c.function == function))
            counts[table.name] = done.rowcount
    return counts
