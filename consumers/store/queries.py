"""The two read queries the schema is indexed for (docs/store.md shows their SQL and plans)."""

from __future__ import annotations

import sqlalchemy as sa

from consumers.store.models import tags


def assets_with_label_query(
    label: str, min_score: float, function: str | None = None
) -> sa.Select[tuple[str]]:
    """Distinct asset ids with a tag ``label`` scored ``>= min_score``: a range scan of
    ``ix_tags_label_score (label, score)``.
    """
    query = (
        sa.select(tags.c.asset_id)
        .where(tags.c.label == label, tags.c.score >= min_score)
        .distinct()
        .order_by(tags.c.asset_id)
    )
    return query if function is None else query.where(tags.c.function == function)


def tags_for_asset_query(asset_id: str) -> sa.Select[tuple[object, ...]]:
    """Every tag of one asset, in primary-key order: a prefix scan of ``pk_tags``."""
    return (
        sa.select(tags)
        .where(tags.c.asset_id == asset_id)
        .order_by(tags.c.function, tags.c.label, tags.c.ordinal)
    )
