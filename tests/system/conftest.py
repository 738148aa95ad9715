from collections.abc import Iterator

import pytest

from tests.support.platform import kill_leftovers


@pytest.fixture(autouse=True)
def no_platform_outlives_its_test() -> Iterator[None]:
    """A test that fails before stopping its `edc up` must not leave it stealing jobs."""
    yield
    kill_leftovers()
