"""`edc eval` runs exactly the harness's evaluation: its tests use the harness's fixtures."""

from tests.harness.conftest import (  # noqa: F401 - fixtures, used by name
    bwrap_sandbox,
    harness_settings,
    make_task,
    small_task,
)
