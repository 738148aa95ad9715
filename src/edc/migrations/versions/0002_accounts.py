"""accounts, API tokens, web sessions, log-in failures; submissions get an owner and flags

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from edc.models import METRIC_COLUMNS, MetricIsTrue, MetricNumber

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(40), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_submitted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_failures_key", "login_failures", ["key"])

    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("is_baseline", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("disqualified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("disqualified_reason", sa.Text(), nullable=True))
        batch.create_foreign_key(
            "fk_submissions_user_id", "users", ["user_id"], ["id"], ondelete="SET NULL"
        )
    op.execute("UPDATE submissions SET queued_at = created_at")
    # A second pass: the generated columns must not take part in the first pass's table copy
    # on SQLite, and queued_at becomes required once every row has one.
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("queued_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        for name, path in METRIC_COLUMNS:
            batch.add_column(
                sa.Column(name, sa.Float(), sa.Computed(MetricNumber(*path), persisted=True))
            )
        batch.add_column(
            sa.Column("correct", sa.Boolean(), sa.Computed(MetricIsTrue("correct"), persisted=True))
        )
    op.create_index("ix_submissions_user_score", "submissions", ["user_id", "score", "created_at"])
    op.create_index("ix_submissions_baseline", "submissions", ["is_baseline", "score"])
    op.create_index("ix_submissions_user_created", "submissions", ["user_id", "created_at"])
    op.create_index("ix_submissions_status_queued", "submissions", ["status", "queued_at", "id"])


def downgrade() -> None:
    for name in (
        "ix_submissions_status_queued",
        "ix_submissions_user_created",
        "ix_submissions_baseline",
        "ix_submissions_user_score",
    ):
        op.drop_index(name, table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        for column in ("correct", *(name for name, _path in METRIC_COLUMNS)):
            batch.drop_column(column)
    with op.batch_alter_table("submissions") as batch:
        batch.drop_constraint("fk_submissions_user_id", type_="foreignkey")
        for column in (
            "disqualified_reason",
            "disqualified",
            "is_baseline",
            "queued_at",
            "user_id",
        ):
            batch.drop_column(column)
    op.drop_index("ix_login_failures_key", table_name="login_failures")
    op.drop_table("login_failures")
    for table in ("web_sessions", "api_tokens"):
        op.drop_index(f"ix_{table}_user_id", table_name=table)
        op.drop_table(table)
    op.drop_table("users")
