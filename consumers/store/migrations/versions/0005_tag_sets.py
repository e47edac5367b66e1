"""Tag sets without inference (issue 19 item 2): tags.tag_source and .mapping_version, and
the active mappings (taxonomy, thresholds) in tag_mappings.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tags") as batch:
        batch.add_column(sa.Column("tag_source", sa.Text(), nullable=False, server_default="model"))
        batch.add_column(sa.Column("mapping_version", sa.Text(), nullable=True))
    op.create_table(
        "tag_mappings",
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("taxonomy", _JSON, nullable=True),
        sa.Column("thresholds", _JSON, nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("function", name=op.f("pk_tag_mappings")),
    )


def downgrade() -> None:
    op.drop_table("tag_mappings")
    with op.batch_alter_table("tags") as batch:
        batch.drop_column("mapping_version")
        batch.drop_column("tag_source")
