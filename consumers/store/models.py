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

# The tenant of an asset whose event named none.
DEFAULT_TENANT = "default"

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
    # the event's tenant (DEFAULT_TENANT when it named none); every read path filters by it
    tenant: Mapped[str] = mapped_column(
        sa.Text, default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    # SHA-256 (hex) of the bytes last tagged: a result for the same bytes and function version
    # is reused instead of inferred again (content-hash dedup, consumers.stages.infer)
    content_hash: Mapped[str | None] = mapped_column(sa.Text, index=True)


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
    # the version's place in the fleet's promotion history (docs/lifecycle.md): a result of
    # an earlier place never replaces this one; null for fleets without a history
    promotion: Mapped[int | None] = mapped_column(sa.Integer)
    # false once the fleet removed the function (without --purge): kept, no longer served
    served: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())


class VersionResult(SourceColumns, Base):
    """Every version's result of one function for one asset, current or not: a rollback makes
    an earlier version's result current again without running it, and a shadow's results
    live only here (``role = shadow``), never in ``function_results`` or ``tags``.
    """

    __tablename__ = "version_results"
    __table_args__ = (sa.Index(None, "function", "model_version"),)

    asset_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("assets.asset_id", ondelete="CASCADE"), primary_key=True
    )
    function: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    model_version: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    role: Mapped[str] = mapped_column(sa.Text)  # serving | shadow
    type: Mapped[str] = mapped_column(sa.Text)
    etag: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)


version_results = cast(sa.Table, VersionResult.__table__)


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
        # keyset pages of "assets with label L" walk this in asset order (GET /v1/search)
        sa.Index(None, "label", "asset_id"),
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
    # model: the result's own tags (with the active mapping when one was set); retag: drawn
    # again from the stored scores by `tagfleet retag`. mapping_version: the content hash of
    # the taxonomy and thresholds used (null: the model's thresholds, no taxonomy)
    tag_source: Mapped[str] = mapped_column(sa.Text, default="model", server_default="model")
    mapping_version: Mapped[str | None] = mapped_column(sa.Text)


class TagMapping(Base):
    """An active mapping (docs/library.md, "Retag and taxonomy"): per function, the
    thresholds retag set; under ``*``, the taxonomy every function's tags go through. Each
    per tenant: the ``*`` tenant's row is every tenant's without a row of its own. The
    consumer applies them when it writes; ``version`` is their content hash."""

    __tablename__ = "tag_mappings"

    function: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.Text, primary_key=True, default="*", server_default="*")
    taxonomy: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    thresholds: Mapped[dict[str, float]] = mapped_column(JSONType)
    version: Mapped[str] = mapped_column(sa.Text)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HumanLabel(Base):
    """A person's decision on one label of one function for one asset: ``present`` (confirmed
    or added) or ``absent`` (rejected), with who and when. Kept apart from model output, so no
    model result ever overwrites it; it wins over the AI tags when the effective tags are read.
    """

    __tablename__ = "human_labels"
    __table_args__ = (sa.Index(None, "label", "asset_id"),)

    asset_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("assets.asset_id", ondelete="CASCADE"), primary_key=True
    )
    function: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    label: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    decision: Mapped[str] = mapped_column(sa.Text)  # present | absent
    actor: Mapped[str] = mapped_column(sa.Text)  # the API key's name (key id)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """An API key: its public id, the SHA-256 of its secret (never the secret), its tenant
    and scopes (space separated: read, label, admin)."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(sa.Text)
    tenant: Mapped[str] = mapped_column(sa.Text)
    scopes: Mapped[str] = mapped_column(sa.Text)
    name: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReviewItem(Base):
    """A prediction worth a person's look (docs/review.md), once per (asset, function)."""

    __tablename__ = "review_items"
    __table_args__ = (
        sa.UniqueConstraint("asset_id", "function"),
        sa.Index(None, "tenant", "status", "item_id"),
    )

    item_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(sa.Text)
    asset_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("assets.asset_id", ondelete="CASCADE")
    )
    uri: Mapped[str] = mapped_column(sa.Text)
    function: Mapped[str] = mapped_column(sa.Text)
    type: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    label: Mapped[str | None] = mapped_column(sa.Text)  # the model's proposal
    score: Mapped[float | None] = mapped_column(sa.Float)
    scores: Mapped[dict[str, Any]] = mapped_column(JSONType)
    model_version: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.Text, default="open")  # open | answered
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    answered_by: Mapped[str | None] = mapped_column(sa.Text)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


assets = cast(sa.Table, Asset.__table__)
function_results = cast(sa.Table, FunctionResult.__table__)
tags = cast(sa.Table, Tag.__table__)
human_labels = cast(sa.Table, HumanLabel.__table__)
api_keys = cast(sa.Table, ApiKey.__table__)
review_items = cast(sa.Table, ReviewItem.__table__)
tag_mappings = cast(sa.Table, TagMapping.__table__)
