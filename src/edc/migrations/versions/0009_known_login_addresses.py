"""known log-in addresses: where each user has logged in from, exempt from the name throttle

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "known_login_addresses",
        # SHA-256 of "name|address": the address itself is not kept.
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_known_login_addresses_user_id", "known_login_addresses", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_known_login_addresses_user_id", table_name="known_login_addresses")
    op.drop_table("known_login_addresses")
