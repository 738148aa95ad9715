"""teams: participants who compete as one, sharing limits and one leaderboard row per track

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Joining or leaving a team changes the boards (0006's counter, which readers' caches key on).
TRIGGER = "results_on_team_change"
COUNTER = "results"


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(40), nullable=False, unique=True),
        # What a member hands to whoever should join; only its holders may.
        sa.Column("invite_code", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.add_column("users", sa.Column("team_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_users_team_id", "users", "teams", ["team_id"], ["id"], ondelete="SET NULL"
        )
    else:
        # In place: a batch copy of the table would drop 0006's triggers on it. SQLite takes a
        # REFERENCES clause on a new column whose default is NULL.
        op.execute(
            "ALTER TABLE users ADD COLUMN team_id INTEGER "
            "CONSTRAINT fk_users_team_id REFERENCES teams (id) ON DELETE SET NULL"
        )
    op.create_index("ix_users_team_id", "users", ["team_id"])
    if postgresql:
        op.execute(
            f"""
            CREATE FUNCTION edc_{TRIGGER}() RETURNS trigger AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM old_rows JOIN new_rows USING (id)
                           WHERE old_rows.team_id IS DISTINCT FROM new_rows.team_id) THEN
                    INSERT INTO change_counters (name, value)
                    VALUES ('{COUNTER}', floor(random() * 4e18)::bigint)
                    ON CONFLICT (name) DO UPDATE SET value = change_counters.value + 1;
                END IF;
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE ON users "
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION edc_{TRIGGER}()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE ON users FOR EACH ROW "
            "WHEN OLD.team_id IS NOT NEW.team_id BEGIN "
            f"INSERT INTO change_counters (name, value) VALUES ('{COUNTER}', abs(random())) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1; END"
        )


# 0006's triggers on users, which SQLite's batch copy of the table drops with it.
SQLITE_USER_TRIGGERS = [
    ("results_on_rename", "UPDATE", "WHEN OLD.name <> NEW.name"),
    ("results_on_user_delete", "DELETE", ""),
]


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}" + (" ON users" if postgresql else ""))
    if postgresql:
        op.execute(f"DROP FUNCTION IF EXISTS edc_{TRIGGER}()")
    op.drop_index("ix_users_team_id", table_name="users")
    if postgresql:
        op.drop_constraint("fk_users_team_id", "users", type_="foreignkey")
        op.drop_column("users", "team_id")
    else:
        with op.batch_alter_table("users") as batch:
            batch.drop_column("team_id")
        for name, event, when in SQLITE_USER_TRIGGERS:
            op.execute(
                f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON users FOR EACH ROW {when} "
                f"BEGIN INSERT INTO change_counters (name, value) VALUES ('{COUNTER}', "
                "abs(random())) ON CONFLICT (name) DO UPDATE SET value = value + 1; END"
            )
    op.drop_table("teams")
