"""Content-hash dedup's question to the store: which stored results were made from these bytes.

An asset's row keeps the SHA-256 of the bytes last tagged (``assets.content_hash``, indexed);
its current results are what the fleet's serving versions gave for those bytes. The inference
stage reuses them for another asset with the same bytes when the versions still match
(:mod:`consumers.stages.infer`), instead of running the model again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from consumers.store.models import assets, function_results

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReusableResult:
    """One asset stored with the bytes, and its current result object per function."""

    asset_id: str
    functions: dict[str, dict[str, Any]]
    tenant: str | None = None  # the asset's


def reusable_results(
    conn: sa.Connection, content_hashes: Sequence[str]
) -> dict[str, ReusableResult]:
    """Per content hash found: the asset (the smallest id among those not removed that hold
    it) and its served results made from those bytes. Hashes without such an asset are absent.

    A result is of the asset's current bytes only when its ETag is the asset row's: an object
    overwritten and tagged again for some functions keeps the others' results of its older
    bytes, which must not stand for the new ones."""
    a, fr = assets.c, function_results.c
    found: dict[str, ReusableResult] = {}
    wanted = sorted({h for h in content_hashes if h})
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = (
            sa.select(a.content_hash, a.asset_id, a.tenant, fr.function, fr.result)
            .join(function_results, fr.asset_id == a.asset_id)
            .where(
                a.content_hash.in_(chunk),
                a.removed.is_(False),
                fr.served.is_(True),
                fr.etag.is_not_distinct_from(a.etag),  # made from the bytes hashed
            )
            .order_by(a.content_hash, a.asset_id, fr.function)
        )
        for content_hash, asset_id, tenant, function, result in conn.execute(query):
            chosen = found.setdefault(content_hash, ReusableResult(asset_id, {}, tenant))
            if chosen.asset_id == asset_id:
                chosen.functions[function] = dict(result)
    return found
