"""A real browser for the UI tests: Debian's chromium, headless, driven by Playwright.

Shared by each orchestrator's UI tests: the dev-mode one (``quartet ui``: the page it prints first,
where a newcomer lands) and the deployed-mode one (the UI the running services serve). Playwright
drives the system's chromium (``make browser`` installs it) and downloads no browser of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: nodes that must be visible on every orchestrator's pipeline page (ingestion and dbt alike)
NODES = ("flights", "weather", "stg_flights", "fct_flights", "carrier_month_performance")


@contextlib.contextmanager
def chromium_page(width: int = 1600, height: int = 1000) -> Iterator:
    """A fresh page in a headless chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed: `make browser` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def goto_when_served(page, url: str, timeout: float = 300) -> None:
    """Some UIs announce their address before their server answers: retry until it does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            page.goto(url)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def missing_texts(page, texts: Iterable[str], timeout_ms: int = 60_000) -> list[str]:
    """The texts the page does not show (each waited for up to ``timeout_ms``)."""
    missing = []
    for text in texts:
        try:
            page.get_by_text(text, exact=False).first.wait_for(state="attached", timeout=timeout_ms)
        except Exception:
            missing.append(text)
    return missing


def screenshot(page, name: str, fallback: Path) -> Path:
    """Save the page as ``<name>.png`` in ``QUARTET_SCREENSHOTS`` (e.g. docs/img to refresh the
    README's pictures), else in ``fallback`` (a test's tmp_path)."""
    folder = Path(os.environ.get("QUARTET_SCREENSHOTS", fallback))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
