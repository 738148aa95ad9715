"""change counters: a number that moves when finished results change, for readers' caches

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# edc.changes.RESULTS: moves when a finished submission (completed or failed) appears, changes or
# goes, and when a participant is renamed or removed; the leaderboard and the metrics' histograms
# are derived from nothing else that lives in the database.
COUNTER = "results"
FINISHED = "('completed', 'failed')"

# (trigger, table, event, the rows that count: in SQLite's row terms)
TRIGGERS = [
    ("results_on_insert", "submissions", "INSERT", f"NEW.status IN {FINISHED}"),
    (
        "results_on_update",
        "submissions",
        "UPDATE",
        f"OLD.status IN {FINISHED} OR NEW.status IN {FINISHED}",
    ),
    ("results_on_delete", "submissions", "DELETE", f"OLD.status IN {FINISHED}"),
    ("results_on_rename", "users", "UPDATE", "OLD.name <> NEW.name"),
    ("results_on_user_delete", "users", "DELETE", None),
]

# PostgreSQL runs each once per statement over its transition tables: a row trigger would update
# the one counter row once per row, and a bulk statement (a rescore, a restore) would pile up
# versions of that row. (event, transition tables, the rows that count)
POSTGRESQL = {
    "results_on_insert": (
        "NEW TABLE AS new_rows",
        f"SELECT 1 FROM new_rows WHERE status IN {FINISHED}",
    ),
    "results_on_update": (
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"SELECT 1 FROM old_rows WHERE status IN {FINISHED} "
        f"UNION ALL SELECT 1 FROM new_rows WHERE status IN {FINISHED}",
    ),
    "results_on_delete": (
        "OLD TABLE AS old_rows",
        f"SELECT 1 FROM old_rows WHERE status IN {FINISHED}",
    ),
    "results_on_rename": (
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "SELECT 1 FROM old_rows JOIN new_rows USING (id) WHERE old_rows.name <> new_rows.name",
    ),
    "results_on_user_delete": ("OLD TABLE AS old_rows", "SELECT 1 FROM old_rows"),
}


def upgrade() -> None:
    op.create_table(
        "change_counters",
        sa.Column("name", sa.String(length=40), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for name, table, event, _condition in TRIGGERS:
            transition, rows = POSTGRESQL[name]
            # A missing row starts at a random value, never at one a reader may hold from before.
            op.execute(
                f"""
                CREATE FUNCTION edc_{name}() RETURNS trigger AS $$
                BEGIN
                    IF EXISTS ({rows}) THEN
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
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION edc_{name}()"
            )
    else:
        for name, table, event, condition in TRIGGERS:
            when = f"WHEN {condition}" if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {when} BEGIN "
                f"INSERT INTO change_counters (name, value) VALUES ('{COUNTER}', abs(random())) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1; END"
            )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table, _event, _condition in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION IF EXISTS edc_{name}()")
    op.drop_table("change_counters")
