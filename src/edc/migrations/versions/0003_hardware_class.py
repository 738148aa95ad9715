"""submissions carry the hardware class they must be timed on

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(
            sa.Column("hardware_class", sa.String(32), nullable=False, server_default="cpu")
        )
    op.create_index("ix_submissions_class_started", "submissions", ["hardware_class", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_submissions_class_started", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("hardware_class")
