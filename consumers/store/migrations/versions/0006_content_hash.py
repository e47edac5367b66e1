"""assets.content_hash: the SHA-256 of the bytes last tagged, for content-hash dedup (issue 19
item 5: a result for the same bytes and function version is reused, not inferred again).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("content_hash", sa.Text(), nullable=True))
    op.create_index("ix_assets_content_hash", "assets", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_assets_content_hash", table_name="assets")
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("content_hash")
