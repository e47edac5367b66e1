"""The store's tables, declared once for SQLAlchemy (ORM mapping and Core statements).

The migrations in ``migrations/versions`` create exactly these tables; a test compares the two
on both backends. Times are stored in UTC and read back timezone-aware (:class:`UTCDateTime`),
so PostgreSQL (``timestamptz``) and SQLite (text) return the same values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint and index names on every backend, so migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend; naive datetimes are rejected."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware UTC times")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC text, tag it again on the way out.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class SourceColumns:
    """Kafka provenance: the message that produced the row (all null for ``tagfleet tag``)."""

    source_topic: Mapped[str | None] = mapped_column(sa.Text)
    source_partition: Mapped[int | None] = mapped_column(sa.Integer)
    source_offset: Mapped[int | None] = mapped_column(sa.BigInteger)


class Asset(SourceColumns, Base):
    """One object. ``removed`` is set (and its results and tags deleted) on ``ObjectRemoved``;
    the row stays as a tombstone with the removal's provenance until the object is tagged again.
    """

    __tablename__ = "assets"

    asset_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    uri: Mapped[str] = mapped_column(sa.Text)
    etag: Mapped[str | None] = mapped_column(sa.Text)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    removed: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # order key of the newest event applied (consumers.sequencer); an older one is stale
    sequencer: Mapped[str | None] = mapped_column(sa.Text)


class FunctionResult(SourceColumns, Base):
    """The current result of one function for one asset: the raw result object (all scores,
    so thresholds can change later without re-running the model) and its model version.
    """

    __tablename__ = "function_results"

    asset_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("assets.asset_id", ondelete="CASCADE"), primary_key=True
    )
    function: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    type: Mapped[str] = mapped_column(sa.Text)
    model_version: Mapped[str] = mapped_column(sa.Text)
    etag: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Tag(SourceColumns, Base):
    """One label of one function's current result. ``ordinal`` numbers repeated labels of the
    same function (detect boxes); it is 0 for classify and tags.
    """

    __tablename__ = "tags"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["asset_id", "function"],
            ["function_results.asset_id", "function_results.function"],
            ondelete="CASCADE",
        ),
        sa.Index(None, "label", "score"),
    )

    asset_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    function: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    label: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    ordinal: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    score: Mapped[float] = mapped_column(sa.Float)
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    x1: Mapped[float | None] = mapped_column(sa.Float)
    y1: Mapped[float | None] = mapped_column(sa.Float)
    x2: Mapped[float | None] = mapped_column(sa.Float)
    y2: Mapped[float | None] = mapped_column(sa.Float)
    model_version: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


assets = cast(sa.Table, Asset.__table__)
function_results = cast(sa.Table, FunctionResult.__table__)
tags = cast(sa.Table, Tag.__table__)
