"""The model lifecycle (issue 16): function_results.promotion and .served, version_results.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("function_results") as batch:
        batch.add_column(sa.Column("promotion", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("served", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_table(
        "version_results",
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_topic", sa.Text(), nullable=True),
        sa.Column("source_partition", sa.Integer(), nullable=True),
        sa.Column("source_offset", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.asset_id"],
            name=op.f("fk_version_results_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "asset_id", "function", "model_version", name=op.f("pk_version_results")
        ),
    )
    op.create_index(
        op.f("ix_version_results_function_model_version"),
        "version_results",
        ["function", "model_version"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_version_results_function_model_version"), table_name="version_results")
    op.drop_table("version_results")
    with op.batch_alter_table("function_results") as batch:
        batch.drop_column("served")
        batch.drop_column("promotion")
