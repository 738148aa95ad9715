"""track webhooks: a URL told of a new rank 1 and of a published final, per track

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        # NULL: no notifications. It carries a secret (Slack's and Discord's URLs are the key).
        batch.add_column(sa.Column("webhook_url", sa.String(1024), nullable=True))
        # The submission last announced as rank 1 (NULL: none yet), so a leader is told once.
        batch.add_column(sa.Column("announced_leader", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("announced_leader")
        batch.drop_column("webhook_url")
