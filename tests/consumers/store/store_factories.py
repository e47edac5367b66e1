"""Factories and probes for the store tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from consumers.domain import AssetResult, SourcePosition

TABLES = ("assets", "function_results", "tags")
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def classify(version: str = "v1", label: str = "honda", score: float = 0.93) -> dict[str, Any]:
    return {
        "type": "classify",
        "version": version,
        "label": label,
        "score": score,
        "scores": {label: score, "other": round(1 - score, 6)},
    }


def tags_fn(version: str = "v1", **scores: float) -> dict[str, Any]:
    scores = scores or {"red": 0.88, "blue": 0.02}
    thresholds = {label: 0.5 for label in scores}
    return {
        "type": "tags",
        "version": version,
        "tags": [{"label": k, "score": v} for k, v in scores.items() if v >= thresholds[k]],
        "scores": scores,
        "thresholds": thresholds,
    }


def detect(version: str = "v1", *objects: tuple[str, float]) -> dict[str, Any]:
    objects = objects or (("logo", 0.91), ("logo", 0.7), ("cup", 0.6))
    return {
        "type": "detect",
        "version": version,
        "objects": [
            {"label": label, "score": score, "box": [10.0 * i, 5.0, 10.0 * i + 8, 25.5]}
            for i, (label, score) in enumerate(objects)
        ],
    }


def make_result(
    asset_id: str = "s3://bucket/a.jpg",
    functions: dict[str, dict[str, Any]] | None = None,
    *,
    etag: str | None = "etag-1",
    offset: int = 7,
    minutes: int = 0,
) -> AssetResult:
    """An AssetResult as the pipeline builds it, with provenance on topic `assets`, partition 2."""
    return AssetResult(
        asset_id=asset_id,
        uri=asset_id,
        etag=etag,
        width=4000,
        height=3000,
        functions=(
            functions
            if functions is not None
            else {"make": classify(), "colour": tags_fn(), "logos": detect()}
        ),
        source=SourcePosition("assets", 2, offset),
        processed_at=T0 + timedelta(minutes=minutes),
    )


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every store table, sorted: the whole visible state of the store."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return {
                t: sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t}"))  # noqa: S608
                for t in TABLES
            }
    finally:
        engine.dispose()


class WriteProbe:
    """Detects any committed write to the store's tables since `mark()`.

    PostgreSQL: the `xmin` (inserting transaction) of every row, so an UPDATE that rewrites a
    row with equal values still shows. SQLite: `PRAGMA data_version` on a separate connection,
    which changes whenever another connection commits a change to the file.
    """

    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url)
        self._sqlite = (
            sqlite3.connect(self.url.database or "")
            if self.url.get_backend_name() == "sqlite"
            else None
        )
        self._mark: Any = None

    def _state(self) -> Any:
        if self._sqlite is not None:
            return self._sqlite.execute("PRAGMA data_version").fetchone()[0]
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                return {
                    t: sorted(conn.exec_driver_sql(f"SELECT xmin::text FROM {t}").scalars())  # noqa: S608
                    for t in TABLES
                }
        finally:
            engine.dispose()

    def mark(self) -> None:
        self._mark = self._state()

    def unchanged(self) -> bool:
        return bool(self._state() == self._mark)

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
