"""track limits: a track's own allowance per participant

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the platform's limits (EDC_SUBMISSIONS_PER_DAY, EDC_MAX_QUEUED_PER_USER), as before.
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("submissions_per_day", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_queued_per_user", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("max_queued_per_user")
        batch.drop_column("submissions_per_day")
