"""tracks: several tasks per platform, each submission in one

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DEFAULT_TRACK = "default"
# pooled_result() of edc.models, as the indexes' predicate (0004's).
POOLED = (
    "status = 'completed' AND correct IS true AND score IS NOT NULL "
    "AND disqualified IS false AND is_baseline IS false"
)


def _index(name: str, columns: list[str], include: list[str] | None, where: bool) -> None:
    op.create_index(
        name,
        "submissions",
        columns,
        postgresql_include=include or [],
        postgresql_where=sa.text(POOLED) if where else None,
        sqlite_where=sa.text(POOLED) if where else None,
    )


def upgrade() -> None:
    tracks = op.create_table(
        "tracks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        # NULL: the platform's configured task (EDC_TASK_DIR, else the bundled one).
        sa.Column("task_dir", sa.String(1024), nullable=True),
        # development (uploads open) or final (uploads closed, the top entries re-measured).
        sa.Column("phase", sa.String(16), nullable=False, server_default="development"),
        # Its own upload window; NULL: the platform's.
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(
        tracks, [{"name": DEFAULT_TRACK, "task_dir": None, "created_at": datetime.now(UTC)}]
    )
    # Every existing row, queued and running ones included, competes in the default track.
    op.add_column(
        "submissions",
        sa.Column("track", sa.String(64), nullable=False, server_default=DEFAULT_TRACK),
    )
    # The leaderboard probes one track's runs per participant: the track leads its indexes.
    op.drop_index("ix_submissions_pool", table_name="submissions")
    op.drop_index("ix_submissions_best", table_name="submissions")
    op.drop_index("ix_submissions_baseline", table_name="submissions")
    _index(
        "ix_submissions_pool",
        ["track", "user_id", "sha256", "score"],
        ["id", "review", "score_ci_low", "score_ci_high"],
        where=True,
    )
    _index(
        "ix_submissions_best",
        ["track", "user_id", "score", "created_at", "id"],
        ["sha256", "review"],
        where=True,
    )
    _index("ix_submissions_baseline", ["is_baseline", "track", "score"], None, where=False)


def downgrade() -> None:
    op.drop_index("ix_submissions_pool", table_name="submissions")
    op.drop_index("ix_submissions_best", table_name="submissions")
    op.drop_index("ix_submissions_baseline", table_name="submissions")
    # A plain DROP COLUMN (SQLite 3.35+): batch mode would copy the table and cannot copy its
    # generated columns; the indexes on the column are gone by now.
    op.drop_column("submissions", "track")
    _index(
        "ix_submissions_pool",
        ["user_id", "sha256", "score"],
        ["id", "review", "score_ci_low", "score_ci_high"],
        where=True,
    )
    _index(
        "ix_submissions_best",
        ["user_id", "score", "created_at", "id"],
        ["sha256", "review"],
        where=True,
    )
    _index("ix_submissions_baseline", ["is_baseline", "score"], None, where=False)
    op.drop_table("tracks")
