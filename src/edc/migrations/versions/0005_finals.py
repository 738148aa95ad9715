"""rankings that repeat: pooled entries read from one index; finals and their measurements

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The same condition as edc.models.pooled_result(), word for word: PostgreSQL uses a partial
# index only for queries whose condition it can match with the index's.
POOLED = (
    "status = 'completed' AND correct IS true AND score IS NOT NULL "
    "AND disqualified IS false AND is_baseline IS false"
)


def upgrade() -> None:
    op.create_index(
        "ix_submissions_pool",
        "submissions",
        ["user_id", "sha256", "score"],
        postgresql_include=["id", "review", "score_ci_low", "score_ci_high"],
        postgresql_where=sa.text(POOLED),
        sqlite_where=sa.text(POOLED),
    )
    op.create_index(
        "ix_submissions_best",
        "submissions",
        ["user_id", "score", "created_at", "id"],
        postgresql_include=["sha256", "review"],
        postgresql_where=sa.text(POOLED),
        sqlite_where=sa.text(POOLED),
    )
    op.create_table(
        "finals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("track", sa.String(64), nullable=True),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("hardware_class", sa.String(32), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("requested_by", sa.String(40), nullable=True),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
    )
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "final_id",
            sa.Integer(),
            sa.ForeignKey("finals.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "submission_id",
            sa.Integer(),
            sa.ForeignKey("submissions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("failure_reason", sa.String(32), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("logs", sa.Text(), nullable=True),
        sa.Column("audit", sa.JSON(), nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("final_id", "submission_id", "round", name="uq_measurements_run"),
    )
    op.create_index("ix_measurements_plan", "measurements", ["final_id", "round", "position"])
    op.create_index("ix_measurements_submission_id", "measurements", ["submission_id"])


def downgrade() -> None:
    op.drop_index("ix_measurements_submission_id", table_name="measurements")
    op.drop_index("ix_measurements_plan", table_name="measurements")
    op.drop_table("measurements")
    op.drop_table("finals")
    op.drop_index("ix_submissions_best", table_name="submissions")
    op.drop_index("ix_submissions_pool", table_name="submissions")
