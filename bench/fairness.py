"""Honest kvcache's ranked score next to each cheat's, in one run, on the bundled task.

    python bench/fairness.py            # about a minute on two cores

Each cheat (``tests/harness/fairness/cheats.py``) does no less work than kvcache and tries to
look faster, or to learn what it must not, by one mechanism. The table shows the ranked figure
(``latency.e2e_per_token_ms.p50``, lower is better) and what the old ranked figure
(``latency.tpot_ms.p50``) would have said, or how the run ended.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the cheats live with their tests

from tests.harness.conftest import write_native  # noqa: E402
from tests.harness.fairness.cheats import (  # noqa: E402
    BURST,
    CHUNKED,
    KVCACHE,
    NESTED_JSON,
    PRECOMPUTED,
    python_cheat,
)
from tests.harness.fairness.test_exfiltration import DUMP_PROMPTS, LEAKS  # noqa: E402

from edc.config import Settings  # noqa: E402
from edc.errors import RunFailed  # noqa: E402
from edc.harness.disclosure import public_sentence  # noqa: E402
from edc.harness.evaluate import evaluate_submission  # noqa: E402
from edc.sandbox.backends import choose_sandbox  # noqa: E402
from edc.tasks.task import Task, bundled_task_dir  # noqa: E402


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="edc-fairness-"))
    settings = Settings(sandbox="bwrap", data_dir=scratch / "data")
    sandbox = choose_sandbox(settings)
    task = Task.load(bundled_task_dir())
    entries = {
        "honest kvcache": KVCACHE.parent,
        "burst (one chunk)": python_cheat(scratch / "burst", BURST),
        "chunks of 8": python_cheat(scratch / "chunked", CHUNKED),
        "precomputed answers": python_cheat(scratch / "pre", PRECOMPUTED),
        "nested JSON": write_native(scratch / "nested", NESTED_JSON),
        "prompt dump in an id": write_native(
            scratch / "dump", DUMP_PROMPTS.format(leak=LEAKS["unknown_id"])
        ),
    }
    rows = []
    honest_score = None
    for name, submission in entries.items():
        try:
            m = evaluate_submission(
                settings=settings,
                sandbox=sandbox,
                submission_dir=submission,
                task=task,
                run_dir=scratch / "runs" / name.replace(" ", "-"),
            ).metrics
        except RunFailed as exc:
            rows.append((name, "—", "—", "—", f"{exc.reason}: {public_sentence(exc)}"))
            continue
        score = m["score"]
        honest_score = honest_score or score
        rows.append(
            (
                name,
                f"{score:.4f}",
                f"{score / honest_score:.2f}×",
                f"{m['latency']['tpot_ms']['p50']:.4f}",
                "flagged implausible" if m["plausibility"]["implausible"] else "completed",
            )
        )
    header = ("submission", "ranked (ms)", "vs honest", "old TPOT p50 (ms)", "outcome")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
