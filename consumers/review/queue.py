"""``ReviewQueue``: the service's review hook (``Storer(review=...)``), called with the
results it has just stored and published.

Each candidate (:mod:`consumers.review.flagging`) is admitted while its (function, label) has
had fewer than ``max_per_label_hour`` items in the last hour and the queue fewer than
``max_per_hour`` (counted in ``review_items``, so every pod sees the same queue; pods admitting
at the same instant may pass a cap by a batch), then inserted into ``review_items`` where its
(asset, function) is not queued yet (``ON CONFLICT DO NOTHING``: an asset already queued,
answered or not, is not queued again, replays included), and the items inserted are sent to
the review topic, keyed by asset id. A failure is logged and costs the review of that batch,
never its results: the results are stored and acknowledged before the hook runs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from consumers.domain import AssetResult
from consumers.ports import OutRecord, RecordProducer
from consumers.results import rfc3339
from consumers.review.flagging import Candidate, ReviewPolicy, flag
from consumers.review.formats import encode
from consumers.store.models import DEFAULT_TENANT, review_items

log = logging.getLogger(__name__)


def item_view(row: Any) -> dict[str, Any]:
    """A ``review_items`` row as the API and the review topic show it."""
    return {
        "item": row["item_id"],
        "asset_id": row["asset_id"],
        "uri": row["uri"],
        "tenant": row["tenant"],
        "function": row["function"],
        "type": row["type"],
        "reason": row["reason"],
        "label": row["label"],
        "score": row["score"],
        "scores": row["scores"],
        "model_version": row["model_version"],
        "created_at": rfc3339(row["created_at"]),
        "status": row["status"],
        "answer": row["answer"],
        "answered_by": row["answered_by"],
        "answered_at": None if row["answered_at"] is None else rfc3339(row["answered_at"]),
    }


class ReviewQueue:
    def __init__(
        self,
        *,
        engine: sa.Engine,
        producer: RecordProducer | None,
        topic: str,
        fmt: str = "json",
        policy: ReviewPolicy | None = None,
        max_per_label_hour: int = 20,
        max_per_hour: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine, self._producer, self._topic, self._fmt = engine, producer, topic, fmt
        self._policy = policy or ReviewPolicy()
        self._per_label, self._per_hour, self._clock = max_per_label_hour, max_per_hour, clock

    def __call__(self, results: Sequence[AssetResult]) -> None:
        """Flag, cap, queue and publish; never raises (see the module doc)."""
        try:
            self.enqueue(results)
        except Exception:
            log.exception("could not queue reviews for a batch", extra={"results": len(results)})

    def enqueue(self, results: Sequence[AssetResult]) -> list[dict[str, Any]]:
        """The items queued now (raises on a database or broker error)."""
        candidates = [c for r in results for c in flag(r, self._policy)]
        if not candidates:
            return []
        now = self._clock()
        with self._engine.begin() as conn:
            admitted = self._admit(conn, candidates, now - timedelta(hours=1))
            rows = [self._row(c, now) for c in admitted]
            inserted: list[dict[str, Any]] = []
            for row in rows:  # one at a time: RETURNING of a multi-row DO NOTHING is per row
                done = conn.execute(
                    _insert(conn)
                    .values(**row)
                    .on_conflict_do_nothing(index_elements=["asset_id", "function"])
                    .returning(*review_items.c)
                ).mappings()
                inserted.extend(item_view(r) for r in done)
        if inserted and self._producer is not None and self._topic:
            self._producer.send_all(
                [
                    OutRecord(self._topic, i["asset_id"].encode(), encode(i, self._fmt))
                    for i in inserted
                ]
            )
        if inserted:
            log.info("queued for review", extra={"items": len(inserted)})
        return inserted

    def _admit(
        self, conn: sa.Connection, candidates: list[Candidate], since: datetime
    ) -> list[Candidate]:
        r = review_items.c
        queued = set()
        for start in range(0, len(candidates), 500):
            pairs = [(c.asset_id, c.function) for c in candidates[start : start + 500]]
            queued |= set(
                conn.execute(
                    sa.select(r.asset_id, r.function).where(
                        sa.tuple_(r.asset_id, r.function).in_(pairs)
                    )
                ).all()
            )
        candidates = [c for c in candidates if (c.asset_id, c.function) not in queued]
        total = conn.execute(
            sa.select(sa.func.count()).select_from(review_items).where(r.created_at >= since)
        ).scalar_one()
        keys = sorted({(c.function, c.label or "") for c in candidates})
        counts: Counter[tuple[str, str]] = Counter()
        for function, label in keys:
            counts[(function, label)] = conn.execute(
                sa.select(sa.func.count())
                .select_from(review_items)
                .where(
                    r.function == function,
                    sa.func.coalesce(r.label, "") == label,
                    r.created_at >= since,
                )
            ).scalar_one()
        admitted = []
        for c in candidates:
            key = (c.function, c.label or "")
            if total >= self._per_hour or counts[key] >= self._per_label:
                continue
            counts[key] += 1
            total += 1
            admitted.append(c)
        return admitted

    @staticmethod
    def _row(c: Candidate, now: datetime) -> dict[str, Any]:
        return {
            "tenant": c.tenant or DEFAULT_TENANT,
            "asset_id": c.asset_id,
            "uri": c.uri,
            "function": c.function,
            "type": c.type,
            "reason": c.reason,
            "label": c.label,
            "score": c.score,
            "scores": c.scores,
            "model_version": c.model_version,
            "created_at": now,
            "status": "open",
        }


def _insert(conn: sa.Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(review_items)
    return sqlite.insert(review_items)
