"""The pages a new user finds their way by, in a real browser against one real `edc up`.

The leaderboard's own row links to its submission page (and a rival's does not), the chart's time
axis reads distinct times, and the task page is reached from the navigation bar and tells the
task and the submission format. Results are written to the platform's database as a worker would
leave them (the journey test covers a real evaluation). Screenshots go to $TMPDIR/edc-browser/.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.portal.presentation import metric_label
from edc.services.tracks import add_track
from edc.tasks.task import load_task
from tests.support.browser import SCREENSHOTS, watched_page
from tests.support.competition import PASSWORD, add_submission, make_user, metrics
from tests.support.platform import (
    RunningPlatform,
    kill_leftovers,
    quick_task,
    start_platform,
    stop_platform,
)

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

NAME = "pathfinder"
REPO = Path(__file__).resolve().parents[2]


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


def log_in(page: sync_api.Page) -> None:
    page.goto("/login")
    page.fill("#name", NAME)
    page.fill("#password", PASSWORD)
    page.click("form.card button[type=submit]")
    sync_api.expect(page.locator("#nav-user")).to_contain_text(NAME)


def test_a_leaderboard_row_leads_to_its_submission_page(
    page: sync_api.Page, entries: dict[str, int], database: Settings
) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    expect = sync_api.expect
    log_in(page)

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


def test_a_participant_chooses_a_track_on_upload_and_reads_its_page(
    page: sync_api.Page, database: Settings, entries: dict[str, int], tmp_path: Path
) -> None:
    expect = sync_api.expect
    gpu_task = quick_task(tmp_path / "gpu")
    toml = gpu_task / "task.toml"
    toml.write_text(toml.read_text().replace('class = "cpu"', 'class = "h100"'))
    with db.session_scope(database) as session:
        add_track(session, database, name="gpu", task_dir=gpu_task)
    archive = tmp_path / "kv.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(REPO / "examples" / "kvcache" / "submission.py", "submission.py")

    log_in(page)
    page.goto("/")
    page.select_option("#upload-track", "gpu")
    page.set_input_files("input[name=file]", str(archive))
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    page.wait_for_url("**/submissions/*")
    submission_id = int(page.url.rsplit("/", 1)[1])
    with db.session_scope(database) as session:
        row = session.get(Submission, submission_id)
        assert row is not None and (row.track, row.hardware_class) == ("gpu", "h100")

    page.goto("/task")
    page.click('#track-tabs a[data-track="gpu"]')
    page.wait_for_url("**/task?track=gpu")
    expect(page.locator("#facts-decoding")).to_contain_text("h100")
    page.goto("/leaderboard?track=gpu")
    expect(page.locator("#board-track")).to_have_text("gpu")
    # Its own board: the default track's entries are not on it.
    expect(page.locator(f'tr[data-participant="{NAME}"]')).to_have_count(0)
    page.screenshot(path=str(SCREENSHOTS / "track-page.png"), full_page=True)
