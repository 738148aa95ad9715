"""A real browser (Playwright driving Debian's chromium) on one site, watched: every request that
leaves the site and every Content-Security-Policy violation is recorded, and both must stay empty.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(tempfile.gettempdir()) / "edc-browser"
POLICY_WORDS = "Content Security Policy"  # how chromium words a violation on the console


def playwright_api() -> Any:
    """Playwright's sync API, or the calling test skipped with the reason."""
    api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return api


@dataclass
class Watched:
    page: Any
    foreign: list[str] = field(default_factory=list)  # requests that left the site
    violations: list[str] = field(default_factory=list)  # the policy's console reports


@contextmanager
def watched_page(base_url: str) -> Iterator[Watched]:
    """A page on ``base_url``; on a clean exit, asserts it fetched nothing elsewhere and broke
    no Content-Security-Policy."""
    api = playwright_api()
    with api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        watched = Watched(context.new_page())
        watched.page.on(
            "request",
            lambda r: watched.foreign.append(r.url) if not r.url.startswith(base_url) else None,
        )
        watched.page.on(
            "console",
            lambda m: watched.violations.append(m.text) if POLICY_WORDS in m.text else None,
        )
        try:
            yield watched
        finally:
            context.close()
            browser.close()
    assert watched.foreign == [], f"requests left the site: {watched.foreign}"
    assert watched.violations == [], watched.violations
