"""A real browser (Playwright driving Debian's chromium) against a real `edc up`.

Sign up, log out, log in, upload through the form, watch the submission turn completed without
reloading the page, and find it on the leaderboard. Screenshots go to $TMPDIR/edc-browser/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, SCREENSHOTS, watched_page
from tests.support.platform import RunningPlatform, kvcache_zip, start_platform, stop_platform

pytestmark = pytest.mark.slow

NAME = "webby"
PASSWORD = "a long browser password"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path)
    yield running
    if running.process.poll() is None:
        stop_platform(running)


@pytest.fixture
def page(platform: RunningPlatform) -> Iterator[object]:
    with watched_page(platform.url) as watched:
        yield watched.page


def test_sign_up_log_in_upload_watch_it_complete_and_find_it_ranked(
    platform: RunningPlatform, page: sync_api.Page, tmp_path: Path
) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    expect = sync_api.expect

    page.goto("/signup")
    page.fill("#name", NAME)
    page.fill("#password", PASSWORD)
    page.fill("#password_again", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#nav-user")).to_contain_text(NAME)

    page.click("text=Log out")
    expect(page.locator("text=Log in").first).to_be_visible()
    page.goto("/login")
    page.fill("#name", NAME)
    page.fill("#password", PASSWORD)
    page.click("form.card button[type=submit]")
    expect(page.locator("#nav-user")).to_contain_text(NAME)

    archive = tmp_path / "kvcache.zip"
    archive.write_bytes(kvcache_zip())
    page.set_input_files("input[name=file]", str(archive))
    page.click("text=Upload")
    page.wait_for_url("**/submissions/*")
    # A marker on the window: a reload would wipe it.
    page.evaluate("window.__notReloaded = true")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-status", "completed", timeout=180_000)
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    expect(page.locator("#figures")).to_contain_text("TPOT p50")
    expect(page.locator("#charts")).to_be_visible()
    page.wait_for_timeout(300)  # let the charts draw before the picture
    page.screenshot(path=str(SCREENSHOTS / "submission.png"), full_page=True)
    submission_id = page.url.rstrip("/").rsplit("/", 1)[1]

    page.goto("/leaderboard")
    row = page.locator(f'tr[data-participant="{NAME}"]')
    expect(row).to_be_visible()
    assert row.get_attribute("id") == f"entry-{submission_id}"
    expect(row.locator("td").first).to_have_text("1")
    expect(page.locator("#history-chart")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "leaderboard.png"), full_page=True)
