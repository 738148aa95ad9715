"""tests/support/timing_lock.py: under pytest-xdist, a test marked ``timing`` runs with no other
test beside it, while the others still run side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

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


def test_a_timed_test_runs_alone_and_the_others_side_by_side(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
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
