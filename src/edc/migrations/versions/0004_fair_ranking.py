"""fair ranking: organisers' review of doubtful results, an audit record, the hidden prompt pool

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("review", sa.String(32), nullable=True))
        batch.add_column(sa.Column("audit", sa.JSON(), nullable=True))
    op.create_table(
        "hidden_prompts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("prompt_id", sa.String(100), nullable=False),
        sa.Column("tokens", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task", "prompt_id", name="uq_hidden_prompts_task_id"),
    )


def downgrade() -> None:
    op.drop_table("hidden_prompts")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("audit")
        batch.drop_column("review")
