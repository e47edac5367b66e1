"""What the API reads and writes in the store. Every read takes the caller's tenant and
filters by it: an asset of another tenant is as absent as one never stored.

Search pages are keyset pages over ``asset_id`` (``asset_id > :after ORDER BY asset_id
LIMIT :n``), walked through ``ix_tags_label_asset_id`` and ``ix_human_labels_label_asset_id``:
an asset present before and after a page boundary is listed exactly once, whatever is written
meanwhile, and no page costs more than its own rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from consumers.api.effective import effective_tags, human_label
from consumers.results import rfc3339
from consumers.review.queue import item_view
from consumers.store.errors import translate_errors
from consumers.store.models import assets, function_results, human_labels, review_items, tags

Origin = Literal["ai", "human", "any"]


def _visible(asset_id: str, tenant: str) -> sa.ColumnElement[bool]:
    a = assets.c
    return sa.and_(a.asset_id == asset_id, a.tenant == tenant, a.removed.is_(False))


def asset_view(engine: sa.Engine, tenant: str, asset_id: str) -> dict[str, Any] | None:
    """The asset as ``GET /v1/assets/{id}`` shows it, or None when the tenant has no such
    (live) asset. One transaction, so the results and tags agree."""
    with translate_errors("asset_view"), engine.connect() as conn:
        asset = conn.execute(sa.select(assets).where(_visible(asset_id, tenant))).mappings().first()
        if asset is None:
            return None
        results = conn.execute(
            sa.select(function_results)
            .where(function_results.c.asset_id == asset_id)
            .order_by(function_results.c.function)
        ).mappings()
        functions = {
            r["function"]: {
                "type": r["type"],
                "version": r["model_version"],
                "result": r["result"],
                "processed_at": rfc3339(r["processed_at"]),
                "stored_at": rfc3339(r["stored_at"]),
            }
            for r in results
        }
        ai = list(
            conn.execute(
                sa.select(tags)
                .where(tags.c.asset_id == asset_id)
                .order_by(tags.c.function, tags.c.label, tags.c.ordinal)
            ).mappings()
        )
        human = list(
            conn.execute(
                sa.select(human_labels)
                .where(human_labels.c.asset_id == asset_id)
                .order_by(human_labels.c.function, human_labels.c.label)
            ).mappings()
        )
    return {
        "asset_id": asset["asset_id"],
        "uri": asset["uri"],
        "etag": asset["etag"],
        "width": asset["width"],
        "height": asset["height"],
        "tenant": asset["tenant"],
        "updated_at": rfc3339(asset["updated_at"]),
        "functions": functions,
        "effective_tags": effective_tags(ai, human),
        "human_labels": [human_label(h) for h in human],
    }


def search_query(
    tenant: str,
    *,
    label: str,
    function: str | None,
    min_score: float,
    origin: Origin,
    after: str | None,
    limit: int,
) -> sa.Select[Any]:
    """The keyset query of one search page (:func:`search`).

    The ids come from the label's index in asset order; the tenant is an ``EXISTS`` on the
    asset's primary key bounded by the cursor too, so PostgreSQL joins from the cursor on
    instead of walking every asset before it (docs/benchmarks.md, "Search"); the uris are
    joined to the page's ids last.
    """
    a, t, h = assets.c, tags.c, human_labels.c

    def owned(column: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        condition = sa.and_(a.asset_id == column, a.tenant == tenant, a.removed.is_(False))
        if after is not None:
            condition = sa.and_(condition, a.asset_id > after)
        return sa.exists().where(condition)

    branches: list[sa.Select[Any]] = []
    if origin in ("ai", "any"):
        rejected = sa.exists().where(
            h.asset_id == t.asset_id,
            h.function == t.function,
            h.label == t.label,
            h.decision == "absent",
        )
        ai = sa.select(t.asset_id.label("asset_id")).where(
            t.label == label, t.score >= min_score, owned(t.asset_id), ~rejected
        )
        if function is not None:
            ai = ai.where(t.function == function)
        if after is not None:
            ai = ai.where(t.asset_id > after)
        branches.append(ai.distinct().order_by(t.asset_id).limit(limit))
    if origin in ("human", "any"):
        person = sa.select(h.asset_id.label("asset_id")).where(
            h.label == label, h.decision == "present", owned(h.asset_id)
        )
        if function is not None:
            person = person.where(h.function == function)
        if after is not None:
            person = person.where(h.asset_id > after)
        branches.append(person.distinct().order_by(h.asset_id).limit(limit))
    if len(branches) == 1:
        ids = branches[0].subquery()
    else:
        ids = (
            sa.select(sa.union(*(b.subquery().select() for b in branches)).subquery().c.asset_id)
            .order_by("asset_id")
            .limit(limit)
            .subquery()
        )
    return (
        sa.select(ids.c.asset_id, a.uri)
        .join(assets, a.asset_id == ids.c.asset_id)
        .order_by(ids.c.asset_id)
    )


def search(
    engine: sa.Engine,
    tenant: str,
    *,
    label: str,
    function: str | None,
    min_score: float,
    origin: Origin,
    after: str | None,
    limit: int,
) -> list[dict[str, str]]:
    """One page of the tenant's assets whose effective tags hold ``label``, by asset id."""
    query = search_query(
        tenant,
        label=label,
        function=function,
        min_score=min_score,
        origin=origin,
        after=after,
        limit=limit,
    )
    with translate_errors("search"), engine.connect() as conn:
        return [{"asset_id": row[0], "uri": row[1]} for row in conn.execute(query)]


def set_label(
    engine: sa.Engine,
    tenant: str,
    asset_id: str,
    function: str,
    label: str,
    decision: Literal["present", "absent"],
    actor: str,
) -> dict[str, Any] | None:
    """Record a person's decision (replacing their earlier one on the same label); None when
    the tenant has no such asset. Model writes never touch this table."""
    row = {
        "asset_id": asset_id,
        "function": function,
        "label": label,
        "decision": decision,
        "actor": actor,
        "decided_at": datetime.now(UTC),
    }
    with translate_errors("set_label"), engine.begin() as conn:
        found = conn.execute(
            sa.select(assets.c.asset_id).where(_visible(asset_id, tenant)).with_for_update()
        ).first()
        if found is None:
            return None
        conn.execute(
            sa.delete(human_labels).where(
                human_labels.c.asset_id == asset_id,
                human_labels.c.function == function,
                human_labels.c.label == label,
            )
        )
        conn.execute(sa.insert(human_labels), [row])
    return human_label(row)


def review_page(
    engine: sa.Engine, tenant: str, *, status: str, after: int | None, limit: int
) -> list[dict[str, Any]]:
    """One page of the tenant's review items in queue order."""
    r = review_items.c
    query = sa.select(review_items).where(r.tenant == tenant, r.status == status)
    if after is not None:
        query = query.where(r.item_id > after)
    query = query.order_by(r.item_id).limit(limit)
    with translate_errors("review_page"), engine.connect() as conn:
        return [item_view(row) for row in conn.execute(query).mappings()]


def review_item(engine: sa.Engine, tenant: str, item_id: int) -> dict[str, Any] | None:
    r = review_items.c
    query = sa.select(review_items).where(r.tenant == tenant, r.item_id == item_id)
    with translate_errors("review_item"), engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else item_view(row)


def answer_review(
    engine: sa.Engine,
    tenant: str,
    item_id: int,
    answer: dict[str, Any],
    labels: list[tuple[str, Literal["present", "absent"]]],
    actor: str,
) -> dict[str, Any] | None:
    """Mark the item answered and store the person's labels in one transaction; None when
    the tenant has no such item."""
    r = review_items.c
    now = datetime.now(UTC)
    with translate_errors("answer_review"), engine.begin() as conn:
        item = (
            conn.execute(
                sa.select(review_items)
                .where(r.tenant == tenant, r.item_id == item_id)
                .with_for_update()
            )
            .mappings()
            .first()
        )
        if item is None:
            return None
        for label, decision in labels:
            conn.execute(
                sa.delete(human_labels).where(
                    human_labels.c.asset_id == item["asset_id"],
                    human_labels.c.function == item["function"],
                    human_labels.c.label == label,
                )
            )
            conn.execute(
                sa.insert(human_labels),
                [
                    {
                        "asset_id": item["asset_id"],
                        "function": item["function"],
                        "label": label,
                        "decision": decision,
                        "actor": actor,
                        "decided_at": now,
                    }
                ],
            )
        conn.execute(
            sa.update(review_items)
            .where(r.item_id == item_id)
            .values(status="answered", answer=answer, answered_by=actor, answered_at=now)
        )
        row = conn.execute(sa.select(review_items).where(r.item_id == item_id)).mappings().one()
    return item_view(row)
