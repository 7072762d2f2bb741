"""A real browser for the UI tests: Debian's chromium, headless, driven by Playwright.

Shared by each orchestrator's UI tests: the dev-mode one (``quartet ui``, the page a newcomer opens
first: :func:`open_pipeline_view`) and the deployed-mode one (its own UI served by the running
services). Playwright uses
the system's chromium (``make browser`` installs it) and downloads no browser of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import urllib.request
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


def _dagster(page, url: str, password: str | None) -> None:
    # the asset graph upstream of a mart: raw (dlt) -> staging -> intermediate -> marts (dbt)
    goto_when_served(
        page,
        f"{url.rstrip('/')}/assets/marts/carrier_month_performance"
        "?view=lineage&lineageScope=upstream&lineageDepth=10",
    )
    page.wait_for_timeout(3000)
    skip = page.get_by_role("button", name="Skip")  # the community dialog of a fresh instance
    if skip.count():
        skip.click()


def _airflow(page, url: str, password: str | None) -> None:
    page.goto(f"{url}/dags/quartet_pipeline")
    page.get_by_text("Sign into Airflow").or_(page.get_by_text("quartet_pipeline")).first.wait_for(
        timeout=60_000
    )
    if page.get_by_text("Sign into Airflow").count():  # the simple auth manager's login page
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(password or "")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/dags/quartet_pipeline.*"), timeout=60_000)
    page.goto(f"{url}/dags/quartet_pipeline/tasks")  # every task of the DAG, ingestion and dbt


def _prefect(page, url: str, password: str | None) -> None:
    # every task run of the finished flow runs: one per dlt resource, one per dbt node
    page.goto(f"{url.rstrip('/')}/runs?tab=task-runs")


def _temporal(page, url: str, password: str | None) -> None:
    base = re.match(r"(https?://[^/]+)", url).group(1)
    with urllib.request.urlopen(f"{base}/api/v1/namespaces/default/workflows", timeout=30) as r:
        executions = json.load(r)["executions"]
    done = next(
        e for e in executions
        if e["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED" and e["type"]["name"] != "SourceWatcher"
    )  # fmt: skip
    workflow, run = done["execution"]["workflowId"], done["execution"]["runId"]
    page.goto(f"{base}/namespaces/default/workflows/{workflow}/{run}/history")


#: how each dev-mode UI reaches the view of the pipeline: the asset graph, the DAG's tasks, the
#: flow runs' task runs, a finished workflow's history
_PIPELINE_VIEWS = {
    "dagster": _dagster,
    "airflow": _airflow,
    "prefect": _prefect,
    "temporal": _temporal,
}


def assert_ui_shows_the_pipeline(
    name: str, url: str, fallback: Path, password: str | None = None
) -> None:
    """Open ``name``'s dev-mode UI at ``url`` in chromium, on the pipeline's view, and check that
    it shows every node of :data:`NODES`; a screenshot ``ui-<name>.png`` is saved either way."""
    with chromium_page() as page:
        _PIPELINE_VIEWS[name](page, url, password)
        missing = missing_texts(page, NODES)
        screenshot(page, f"ui-{name}", fallback)
        assert missing == [], f"{name} UI at {page.url} does not show {missing}"
