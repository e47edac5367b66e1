"""Initial schema: assets, function_results, tags.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _source() -> list[sa.Column]:
    return [
        sa.Column("source_topic", sa.Text(), nullable=True),
        sa.Column("source_partition", sa.Integer(), nullable=True),
        sa.Column("source_offset", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        *_source(),
        sa.PrimaryKeyConstraint("asset_id", name="pk_assets"),
    )
    op.create_table(
        "function_results",
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("processed_at", _time(), nullable=False),
        sa.Column("stored_at", _time(), nullable=False),
        *_source(),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.asset_id"],
            name="fk_function_results_asset_id_assets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("asset_id", "function", name="pk_function_results"),
    )
    op.create_table(
        "tags",
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("x1", sa.Float(), nullable=True),
        sa.Column("y1", sa.Float(), nullable=True),
        sa.Column("x2", sa.Float(), nullable=True),
        sa.Column("y2", sa.Float(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        *_source(),
        sa.ForeignKeyConstraint(
            ["asset_id", "function"],
            ["function_results.asset_id", "function_results.function"],
            name="fk_tags_asset_id_function_function_results",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("asset_id", "function", "label", "ordinal", name="pk_tags"),
    )
    op.create_index("ix_tags_label_score", "tags", ["label", "score"])


def downgrade() -> None:
    op.drop_index("ix_tags_label_score", table_name="tags")
    op.drop_table("tags")
    op.drop_table("function_results")
    op.drop_table("assets")
