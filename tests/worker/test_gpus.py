"""A worker's devices (EDC_GPUS) reach the sandbox of every run it starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edc.config import Settings
from edc.harness.evaluate import session_limits
from edc.tasks.task import load_task


def test_the_worker_s_gpus_go_into_each_run_s_limits() -> None:
    settings = Settings(gpus="2,3")
    assert session_limits(load_task(settings), settings).gpus == ("2", "3")


def test_no_gpus_by_default() -> None:
    settings = Settings()
    assert session_limits(load_task(settings), settings).gpus == ()


@pytest.mark.parametrize("bad", ["gpu0", "1,,2", "all", "-1"])
def test_malformed_device_lists_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(gpus=bad)
