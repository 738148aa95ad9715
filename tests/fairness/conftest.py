"""Cheat submissions, one per way a decoder that is no faster could move the ranking: each must
fail, or rank no better than honest kvcache measured in the same test. The harness's fixtures
(the real bubblewrap sandbox, small tasks on the bundled model) serve here too."""

from tests.harness.conftest import (  # noqa: F401  (fixtures)
    bwrap_sandbox,
    harness_settings,
    make_task,
    small_task,
)
