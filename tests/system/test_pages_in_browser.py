"""The pages a new user finds their way by, in a real browser against one real `edc up`.

The leaderboard's own row links to its submission page (and a rival's does not), the chart's time
axis reads distinct times, and the task page is reached from the navigation bar and tells the
task and the submission format. Results are written to the platform's database as a worker would
leave them (the journey test covers a real evaluation). Screenshots go to $TMPDIR/edc-browser/.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from edc.config import Settings
from edc.models import utcnow
from edc.portal.presentation import metric_label
from edc.tasks.task import load_task
from tests.support.browser import SCREENSHOTS, watched_page
from tests.support.competition import PASSWORD, add_submission, make_user, metrics
from tests.support.platform import (
    RunningPlatform,
    kill_leftovers,
    start_platform,
    stop_platform,
)

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

NAME = "pathfinder"


@pytest.fixture(autouse=True)
def no_platform_outlives_its_test() -> Iterator[None]:
    """Overrides tests/system/conftest.py's per-test cleanup: this module's tests share one
    platform, which `platform` stops (and kills what is left of) when the module ends."""
    yield


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("browser-pages"))
    try:
        yield running
    finally:
        if running.process.poll() is None:
            stop_platform(running)
        kill_leftovers()


@pytest.fixture(scope="module")
def database(platform: RunningPlatform) -> Settings:
    """The settings `edc up` runs with, for writing rows into its database."""
    root = platform.data_dir.parent
    return Settings(data_dir=platform.data_dir, task_dir=root / "task", env="dev")


@pytest.fixture(scope="module")
def entries(database: Settings) -> dict[str, int]:
    """Two participants' results, hours apart (so the chart's axis spans hours)."""
    mine = make_user(database, NAME, password=PASSWORD)[0]
    rival = make_user(database, "rival", password=None)[0]
    earlier = utcnow() - timedelta(hours=6)
    return {
        "rival": add_submission(database, rival, result_metrics=metrics(9.0), created_at=earlier),
        "mine": add_submission(
            database,
            mine,
            result_metrics=metrics(5.0, (4.5, 5.5)),
            created_at=earlier + timedelta(hours=3),
        ),
    }


@pytest.fixture
def page(platform: RunningPlatform) -> Iterator[object]:
    with watched_page(platform.url) as watched:
        yield watched.page


def test_a_leaderboard_row_leads_to_its_submission_page(
    page: sync_api.Page, entries: dict[str, int], database: Settings
) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    expect = sync_api.expect
    page.goto("/login")
    page.fill("#name", NAME)
    page.fill("#password", PASSWORD)
    page.click("form.card button[type=submit]")
    expect(page.locator("#nav-user")).to_contain_text(NAME)

    page.goto("/leaderboard")
    headers = page.locator("#leaderboard thead th").all_inner_texts()
    assert headers[:3] == ["Rank", "Participant", "Submission"]
    label = metric_label(load_task(database).ranking.metric)
    expect(page.locator("#ranked-metric")).to_have_text(label)
    expect(page.locator('tr[data-participant="rival"] a')).to_have_count(0)  # not hers to open

    # The chart: the metric in words on its axis, and times that tell the ticks apart.
    expect(page.locator("#history-chart")).to_be_visible()
    axes = page.evaluate(
        """() => {
          const chart = Chart.getChart(document.getElementById("history-chart"));
          return { ticks: chart.scales.x.ticks.map((t) => t.label),
                   title: chart.options.scales.y.title.text };
        }"""
    )
    assert len(axes["ticks"]) >= 2 and len(set(axes["ticks"])) == len(axes["ticks"]), axes
    assert axes["title"].startswith(label), axes
    page.screenshot(path=str(SCREENSHOTS / "leaderboard-links.png"), full_page=True)

    mine = entries["mine"]
    link = page.locator(f'tr[data-participant="{NAME}"] a[data-submission-link]')
    expect(link).to_have_text(f"#{mine}")
    link.click()
    page.wait_for_url(f"**/submissions/{mine}")
    expect(page.locator("h1")).to_contain_text(f"Submission #{mine}")
    expect(page.locator("#figures")).to_contain_text("throughput")
    expect(page.locator("#public-logs-empty")).to_have_text("No output was captured.")
    expect(page.locator("#public-logs")).to_be_hidden()


def test_the_task_page_is_found_from_the_navbar(page: sync_api.Page, database: Settings) -> None:
    expect = sync_api.expect
    task = load_task(database)
    page.goto("/")  # a visitor, not logged in
    page.click("#nav-task")
    page.wait_for_url("**/task")
    expect(page.locator("#task-name")).to_have_text(task.name)
    form = page.locator("#submission-format")
    expect(form).to_contain_text("submission.py")
    expect(form).to_contain_text("EDC_SOCKET")
    expect(page.locator("#facts-submission")).to_contain_text("a zip of at most")
    expect(page.locator("#facts-limits")).to_contain_text(f"{task.limits.memory_mb} MB")
    assert str(task.sampling.seed) not in page.content()
    page.screenshot(path=str(SCREENSHOTS / "task.png"), full_page=True)
