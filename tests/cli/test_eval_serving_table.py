"""``edc eval``'s table shows the serving sweep, round by round, and the highest rate held; a
schedule the harness could not keep is reported as the platform's failure, not retried here."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from edc.cli.local_eval import (
    _PHASE_LABELS,
    EXIT_CANNOT_RUN,
    EXIT_SUBMISSION_FAILED,
    _failed,
    result_table,
    serving_table,
)
from edc.errors import RunFailed
from edc.harness.evaluate import PHASES, Evaluation
from edc.status import FailureReason
from tests.support.serving import serving_round, summary

SERVING: dict[str, Any] = {
    "slo": {"ttft_ms": 150, "tpot_ms": 15, "target_share": 0.9},
    "burstiness": 1.0,
    "rates": [
        serving_round(4.0, True, 1.0, 3.9, ttft=40.0, e2e=120.0, lag_p99=0.4),
        serving_round(8.0, True, 0.9375, 7.25, ttft=80.0, e2e=240.0, lag_p99=0.8),
        serving_round(16.0, False, 0.5, 6.0, ttft=160.0, e2e=480.0, lag_p99=1.6),
        serving_round(12.0, True, 0.9375, 10.5, ttft=120.0, e2e=360.0, lag_p99=1.2),
        serving_round(12.0, True, 1.0, 11.75, ttft=120.0, e2e=360.0, lag_p99=1.2),
    ],
    "max_rate_under_slo": 12.0,
    "max_rate_under_slo_bracket": [12.0, 16.0],
    "send_lag_ms_p99": 1.6,
}


def _metrics(serving: dict[str, Any] | None) -> dict[str, Any]:
    latency = {
        name: summary(9.0)
        for name in ("e2e_per_token_ms", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
    }
    m: dict[str, Any] = {
        "correct": True,
        "tokens_checked": 320,
        "latency": latency,
        "score": 12.0,
        "score_ci": [12.0, 12.0],
        "score_metric": "serving.max_rate_under_slo" if serving else "latency.e2e_ms.p50",
        "throughput": {"output_tokens_per_s": 900.0},
        "load_s": 0.25,
        "roofline": None,
        "exact_match_rate": 1.0,
        "max_gap": 0.0,
    }
    if serving is not None:
        m["serving"] = serving
    return m


def _render(metrics: dict[str, Any]) -> str:
    console = Console(record=True, width=150, file=io.StringIO())
    evaluation = Evaluation(metrics=metrics, logs="", audit={})
    console.print(result_table(evaluation, task_name="tiny-stdlib", prompt_set="public"))
    return console.export_text()


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]


def test_the_sweep_is_a_table_in_the_order_measured() -> None:
    text = _render(_metrics(SERVING))
    assert "serving sweep, in the order measured (rates in req/s, times in ms)" in text
    header = next(line for line in text.splitlines() if "offered" in line)
    assert _cells(header) == [
        "offered",
        "held",
        "SLO met",
        "goodput",
        "TTFT p99",
        "TPOT p99",
        "E2E p99",
        "lag p99",
    ]
    start = text.index(header)
    rows = [_cells(line) for line in text[start:].splitlines() if re.match(r"│\s*\d", line)]
    # TPOT p99 is each round's tpot_ms.p99 (a tenth of its TTFT in tests/support/serving.py).
    assert rows == [
        ["4", "✓", "100%", "3.90", "40.0", "4.0", "120.0", "0.400"],
        ["8", "✓", "94%", "7.25", "80.0", "8.0", "240.0", "0.800"],
        ["16", "✗", "50%", "6.00", "160.0", "16.0", "480.0", "1.600"],
        ["12", "✓", "94%", "10.50", "120.0", "12.0", "360.0", "1.200"],
        ["12", "✓", "100%", "11.75", "120.0", "12.0", "360.0", "1.200"],
    ]


def test_the_highest_rate_held_is_a_summary_line() -> None:
    text = _render(_metrics(SERVING))
    line = next(line for line in text.splitlines() if "max rate under SLO" in line)
    assert _cells(line) == ["max rate under SLO", "12 req/s (bracket 12 – 16)"]
    slo = next(line for line in text.splitlines() if "serving SLO" in line)
    assert _cells(slo) == [
        "serving SLO",
        "TTFT ≤ 150 ms, then 15 ms per further token, for 90% of the requests at a rate",
    ]
    # The sweep comes after the latency percentiles and before the summary figures.
    assert text.index("e2e_per_token_ms") < text.index("serving sweep") < text.index("score")


def test_the_sweep_fits_an_80_column_terminal() -> None:
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(serving_table(SERVING))
    text = console.export_text()
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert (
        "┃ offered ┃ held ┃ SLO met ┃ goodput ┃ TTFT p99 ┃ TPOT p99 ┃ E2E p99 ┃ lag p99 ┃" in text
    )


def test_no_serving_block_no_serving_table() -> None:
    text = _render(_metrics(None))
    assert "serving" not in text and "max rate under SLO" not in text
    assert "e2e_per_token_ms" in text and "exact match rate" in text


def test_every_phase_has_a_label_that_fits_the_column() -> None:
    assert set(PHASES) <= set(_PHASE_LABELS)
    assert all(len(label) <= 28 for label in _PHASE_LABELS.values())
    assert "serving" in _PHASE_LABELS["serving"]


def test_a_late_harness_is_reported_as_not_retried_here() -> None:
    # The sweep's sentence states the fact (tests/harness/test_serving_session.py); `edc eval`
    # adds that it retries nothing: only a worker retries a failure of the platform.
    failure = RunFailed(
        FailureReason.INFRASTRUCTURE,
        "The harness could not send the serving requests on schedule at 20 requests/s (send lag "
        "p99 25.57 ms, the limit is 20 ms): the machine or the harness was late, not the "
        "submission.",
    )
    out = Console(record=True, width=200, file=io.StringIO())
    err = Console(record=True, width=200, file=io.StringIO())
    # Nothing of the submission was judged: the evaluation could not run.
    assert _failed(out, err, failure, as_json=False) == EXIT_CANNOT_RUN
    text = out.export_text()
    assert "failed (infrastructure): The harness could not send" in text
    assert "not retried here (a worker retries such a failure)" in text
    # The participant's own failures get no such note.
    out = Console(record=True, width=200, file=io.StringIO())
    crashed = RunFailed(FailureReason.CRASHED, "It crashed.")
    assert _failed(out, err, crashed, as_json=False) == EXIT_SUBMISSION_FAILED
    assert "retried" not in out.export_text()
