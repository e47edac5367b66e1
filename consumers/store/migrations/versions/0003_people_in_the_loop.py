"""People in the loop (issue 18): assets.tenant, human labels, API keys, the review queue, and
the (label, asset_id) index that keyset pages of GET /v1/search walk.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("tenant", sa.Text(), nullable=False, server_default="default"))
    op.create_index("ix_tags_label_asset_id", "tags", ["label", "asset_id"])
    op.create_table(
        "human_labels",
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("decided_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.asset_id"],
            name="fk_human_labels_asset_id_assets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("asset_id", "function", "label", name="pk_human_labels"),
    )
    op.create_index("ix_human_labels_label_asset_id", "human_labels", ["label", "asset_id"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
    )
    op.create_table(
        "review_items",
        sa.Column("item_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("scores", _JSON, nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("answer", _JSON, nullable=True),
        sa.Column("answered_by", sa.Text(), nullable=True),
        sa.Column("answered_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.asset_id"],
            name="fk_review_items_asset_id_assets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", name="pk_review_items"),
        sa.UniqueConstraint("asset_id", "function", name="uq_review_items_asset_id_function"),
    )
    op.create_index(
        "ix_review_items_tenant_status_item_id", "review_items", ["tenant", "status", "item_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_review_items_tenant_status_item_id", table_name="review_items")
    op.drop_table("review_items")
    op.drop_table("api_keys")
    op.drop_index("ix_human_labels_label_asset_id", table_name="human_labels")
    op.drop_table("human_labels")
    op.drop_index("ix_tags_label_asset_id", table_name="tags")
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("tenant")
