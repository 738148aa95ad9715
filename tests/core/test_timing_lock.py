"""tests/support/timing_lock.py: under pytest-xdist, a test marked ``timing`` runs with no other
test beside it, while the others still run side by side; a lock held from outside the run stops
it with a reason instead of hanging it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.support.platform import REPO

pytest_plugins = ["pytester"]

SUITE = """
import os
import time

import pytest


def span(name):
    began = time.monotonic()
    time.sleep(0.3)
    with open(os.environ["SPANS"], "a") as log:
        log.write(f"{name} {began} {time.monotonic()}\\n")


@pytest.mark.timing
def test_timed():
    span("timed")


@pytest.mark.parametrize("n", range(8))
def test_plain(n):
    span(f"plain-{n}")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """SUITE in ``pytester``'s folder, with the lock plugin and a lock folder of its own; returns
    the file the tests write their spans to."""
    spans = tmp_path / "spans"
    monkeypatch.setenv("SPANS", str(spans))
    monkeypatch.setenv("EDC_TEST_TIMING_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest(
        'pytest_plugins = ["tests.support.timing_lock"]\n\n\n'
        "def pytest_configure(config):\n"
        '    config.addinivalue_line("markers", "timing: runs alone")\n'
    )
    pytester.makepyfile(test_spans=SUITE)
    return spans


def test_a_timed_test_runs_alone_and_the_others_side_by_side(
    pytester: pytest.Pytester, suite: Path
) -> None:
    spans = suite
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)
    found = {
        name: (float(began), float(ended))
        for name, began, ended in (line.split() for line in spans.read_text().splitlines())
    }
    timed = found.pop("timed")

    def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    assert not [name for name, other in found.items() if overlap(timed, other)]
    plain = list(found.values())
    assert any(overlap(a, b) for i, a in enumerate(plain) for b in plain[i + 1 :])


def test_a_lock_held_from_outside_fails_the_test_and_stops_the_run(
    pytester: pytest.Pytester, suite: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDC_TEST_TIMING_LOCK_WAIT_S", "1")
    holder = os.open(tmp_path / "edc-tests-timing.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    finally:
        os.close(holder)
    result.assert_outcomes(errors=1)  # the first test; the run stopped there
    result.stdout.fnmatch_lines(["*waited 1 s for the tests' timing lock*outside this run*"])
