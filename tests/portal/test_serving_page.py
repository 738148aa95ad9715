"""A submission's page shows the serving scenario where its result has one: the highest rate held
with its bracket, a row per measured rate, and the data its two charts are drawn from; a result
without one shows no such section."""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.portal.app import create_app
from edc.status import SubmissionStatus
from tests.support.browser import watched_page
from tests.support.competition import PASSWORD, add_submission, make_user, metrics, web_login
from tests.support.serving import serving_round
from tests.support.threaded_server import serve_in_thread

HTML = {"accept": "text/html"}


# In the order measured: listed rates up to the first miss, one bisection, one confirmation.
SERVING: dict[str, Any] = {
    "slo": {"ttft_ms": 150, "tpot_ms": 15, "target_share": 0.9},
    "burstiness": 1.0,
    "rates": [
        serving_round(4.0, True, 1.0, 3.9, ttft=40.0, e2e=210.0),
        serving_round(8.0, True, 0.9375, 7.25, ttft=80.0, e2e=260.0),
        serving_round(16.0, False, 0.5, 6.0, ttft=410.0, e2e=990.0),
        serving_round(12.0, True, 0.9375, 10.5, ttft=120.0, e2e=330.0),
        serving_round(12.0, True, 1.0, 11.75, ttft=125.0, e2e=340.0),
    ],
    "max_rate_under_slo": 12.0,
    "max_rate_under_slo_bracket": [12.0, 16.0],
    "send_lag_ms_p99": 0.9,
}


@pytest.fixture
def owner(settings: Settings) -> int:
    return make_user(settings, "server")[0]


@pytest.fixture
def client(settings: Settings, owner: int) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        web_login(test_client, "server")
        yield test_client


def page(client: TestClient, submission_id: int) -> str:
    response = client.get(f"/submissions/{submission_id}", headers=HTML)
    assert response.status_code == 200, response.text
    return response.text


def embedded_metrics(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="submission-data">(.*?)</script>', html, re.S
    )
    assert match, "the page carries no submission data"
    metrics: dict[str, Any] = json.loads(match.group(1))["result_metrics"]
    return metrics


def serving_rows(html: str) -> list[list[str]]:
    body = html[html.index('<tbody id="serving-rates">') :]
    body = body[: body.index("</tbody>")]
    return [
        [html_lib.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells]
        for cells in (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in body.split("<tr>"))
        if cells
    ]


def with_serving(serving: dict[str, Any]) -> dict[str, Any]:
    return {**metrics(5.0), "serving": serving}


def test_the_serving_section_shows_the_sweep(
    client: TestClient, settings: Settings, owner: int
) -> None:
    row_id = add_submission(settings, owner, result_metrics=with_serving(SERVING))
    html = page(client, row_id)
    headline = html[html.index('id="serving-headline"') :]
    headline = re.sub(r"<[^>]+>", "", headline[headline.index(">") + 1 : headline.index("</p>")])
    assert headline == "Max rate under SLO: 12 req/s (bracket 12–16)"
    assert "the first token within 150 ms, then 15 ms per further token, for 90%" in html
    assert serving_rows(html) == [
        ["4", "✓", "100%", "3.9", "40 ms", "210 ms"],
        ["8", "✓", "94%", "7.25", "80 ms", "260 ms"],
        ["16", "✗", "50%", "6", "410 ms", "990 ms"],
        ["12", "✓", "94%", "10.5", "120 ms", "330 ms"],
        ["12", "✓", "100%", "11.8", "125 ms", "340 ms"],
    ]
    # The charts are drawn from the embedded metrics, which carry the whole sweep.
    assert 'id="serving-latency-chart"' in html and 'id="serving-goodput-chart"' in html
    assert embedded_metrics(html)["serving"] == SERVING


def test_a_result_without_serving_has_no_serving_section(
    client: TestClient, settings: Settings, owner: int
) -> None:
    plain = add_submission(settings, owner, result_metrics=metrics(5.0))
    failed = add_submission(settings, owner, status=SubmissionStatus.FAILED, result_metrics=None)
    for row_id in (plain, failed):
        html = page(client, row_id)
        assert 'id="serving' not in html and "Max rate under SLO" not in html
        assert "serving" not in (embedded_metrics(html) or {})


def test_odd_serving_figures_are_shown_as_dashes_not_errors(
    client: TestClient, settings: Settings, owner: int
) -> None:
    odd = {
        "slo": "fast",
        "rates": [{"offered_rate": "<b>4</b>", "attained": "yes", "ttft_ms": None}, 7, None],
        "max_rate_under_slo": None,
        "max_rate_under_slo_bracket": "12-16",
    }
    html = page(client, add_submission(settings, owner, result_metrics=with_serving(odd)))
    assert "<b>4</b>" not in html  # escaped wherever it lands, and not shown as a figure
    assert serving_rows(html) == [["–", "–", "–", "–", "–", "–"]]
    assert "Max rate under SLO: <strong>–</strong>" in html


@pytest.mark.slow
def test_a_browser_draws_both_serving_charts(settings: Settings, owner: int) -> None:
    row_id = add_submission(settings, owner, result_metrics=with_serving(SERVING))
    with (
        serve_in_thread(create_app(settings)) as port,
        watched_page(f"http://127.0.0.1:{port}") as watched,  # asserts no policy violation
    ):
        browser = watched.page
        errors: list[str] = []
        browser.on("pageerror", lambda e: errors.append(str(e)))
        browser.goto("/login")
        browser.fill("input[name=name]", "server")
        browser.fill("input[name=password]", PASSWORD)
        browser.click("button[type=submit]")
        browser.goto(f"/submissions/{row_id}")
        browser.wait_for_load_state("networkidle")
        drawn = browser.evaluate(
            """() => ["serving-latency-chart", "serving-goodput-chart"].map((id) => {
                const chart = Chart.getChart(id);
                return chart && chart.data.datasets.map((d) => [d.label, d.data]);
            })"""
        )
        assert errors == []
    latency, goodput = drawn
    rates = [4.0, 8.0, 12.0, 12.0, 16.0]  # sorted by offered rate
    # A dashed line for the TTFT bound only: the per-token bound is on each request's end
    # (TTFT bound + (N − 1) × it), which no TPOT line shows.
    assert [label for label, _ in latency] == [
        "TTFT p99 (ms)",
        "TPOT p99 (ms)",
        "TTFT SLO (150 ms)",
    ]
    assert [p["x"] for p in latency[0][1]] == rates
    assert [p["y"] for p in latency[0][1]] == [40.0, 80.0, 120.0, 125.0, 410.0]
    assert latency[2][1] == [{"x": 4.0, "y": 150}, {"x": 16.0, "y": 150}]
    assert [p["y"] for p in goodput[0][1]] == [3.9, 7.25, 10.5, 11.75, 6.0]
    assert goodput[1][1] == [{"x": 0, "y": 0}, {"x": 16.0, "y": 16.0}]
