"""Which databases a test runs on.

Every test built on the ``settings`` fixture runs once on SQLite and once on PostgreSQL. An
end-to-end test whose subject is not the database (real sandboxes, real workers, a browser) pays
seconds per run for nothing on the second one; it runs on PostgreSQL, the production database,
while the database's own behaviour keeps its tests on both.
"""

from __future__ import annotations

import pytest

postgres_only = pytest.mark.parametrize("db_kind", ["postgres"])
