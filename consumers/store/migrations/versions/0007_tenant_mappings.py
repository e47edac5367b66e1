"""tag_mappings.tenant: the active mapping per (function, tenant), so that
``tagfleet retag F --tenant A`` activates a mapping for tenant A only (issue 19 item 2).

``*`` is the row of every tenant without one of its own (the rows before this revision
become those): a sentinel rather than NULL because the column is part of the primary key
(NOT NULL on PostgreSQL) and the upsert of the default row needs it to conflict with itself.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tag_mappings") as batch:
        batch.add_column(sa.Column("tenant", sa.Text(), nullable=False, server_default="*"))
        batch.drop_constraint("pk_tag_mappings", type_="primary")
        batch.create_primary_key("pk_tag_mappings", ["function", "tenant"])


def downgrade() -> None:
    op.execute("DELETE FROM tag_mappings WHERE tenant <> '*'")
    with op.batch_alter_table("tag_mappings") as batch:
        batch.drop_constraint("pk_tag_mappings", type_="primary")
        batch.create_primary_key("pk_tag_mappings", ["function"])
        batch.drop_column("tenant")
