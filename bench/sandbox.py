"""Sandbox start-to-exit overhead: a trivial program run bare and through every available backend.

For `python -c pass` (the platform's interpreter bare; each backend's own `python` inside) and
`/bin/true`, times N runs from "start" to "exit seen" by the host's monotonic clock and prints the
medians side by side with the ratio to bare. Bare runs go through `subprocess.run`; sandboxed runs
through `Sandbox.run` (so they include limits, capture and cleanup). The machine is shared: each
figure is measured in this one run, interleaved, and compared only with its neighbours.

Usage: python bench/sandbox.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edc.config import Settings
from edc.sandbox.backends import BACKENDS, backend_class
from edc.sandbox.base import Sandbox, SandboxSpec
from edc.sandbox.bwrap import BwrapSandbox

WARMUP = 2


def backends() -> list[tuple[str, Sandbox]]:
    """Every registered backend that can run here, plus bwrap without cgroups for comparison."""
    found: list[tuple[str, Sandbox]] = []
    for name in sorted(BACKENDS):
        try:
            cls = backend_class(name)
            reason = cls.unavailable_reason()
        except ImportError as exc:
            reason = f"cannot be imported: {exc}"
        if reason is not None:
            print(f"{name}: skipped ({reason})")
            continue
        found.append((name, cls.from_settings(Settings())))
        if name == "bwrap":
            found.append(("bwrap, rlimits only", BwrapSandbox(use_cgroups=False)))
    return found


def median_ms(run: Callable[[], None], runs: int) -> float:
    for _ in range(WARMUP):
        run()
    times = []
    for _ in range(runs):
        start = time.monotonic()
        run()
        times.append(time.monotonic() - start)
    return statistics.median(times) * 1000


def bare(argv: tuple[str, ...]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)

    return run


def sandboxed(sandbox: Sandbox, argv: tuple[str, ...], submission: Path) -> Callable[[], None]:
    spec = SandboxSpec(argv=argv, submission_dir=submission, wall_timeout_s=60.0)

    def run() -> None:
        result = sandbox.run(spec)
        if not result.ok:
            raise SystemExit(f"{sandbox.name} failed on {argv}: {result}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    available = backends()
    programs: list[tuple[str, tuple[str, ...], Callable[[Sandbox], tuple[str, ...]]]] = [
        ("python -c pass", (sys.executable, "-c", "pass"), lambda s: (s.python, "-c", "pass")),
        ("/bin/true", ("/bin/true",), lambda s: ("/bin/true",)),
    ]
    with tempfile.TemporaryDirectory(prefix="edc-bench-sandbox-") as tmp:
        submission = Path(tmp)
        submission.chmod(0o755)
        print(f"\n{args.runs} runs each (after {WARMUP} warm-up runs), medians:\n")
        header = f"{'program':<16} {'backend':<20} {'bare ms':>9} {'sandboxed ms':>13}"
        print(header + f" {'overhead ms':>12} {'ratio':>7}")
        print("-" * (len(header) + 21))
        for label, bare_argv, inside in programs:
            for name, sandbox in available:
                # Bare measured again beside each backend: the machine's load drifts.
                bare_ms = median_ms(bare(bare_argv), args.runs)
                box_ms = median_ms(sandboxed(sandbox, inside(sandbox), submission), args.runs)
                print(
                    f"{label:<16} {name:<20} {bare_ms:>9.1f} {box_ms:>13.1f}"
                    f" {box_ms - bare_ms:>12.1f} {box_ms / bare_ms:>6.1f}x"
                )
    for name, sandbox in available:
        describe = getattr(sandbox, "describe_isolation", None)
        if callable(describe):
            print(f"\n{name}: {describe()}")


if __name__ == "__main__":
    main()
