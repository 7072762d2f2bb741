"""Each orchestrator's own UI, opened in a real browser (Debian's chromium, headless, driven by
Playwright): `quartet ui <name>` serves the pipeline, and the page shows its nodes - the asset
graph, the DAG's tasks, the flow run's task runs, the workflow's activities. A screenshot of each
is saved (``QUARTET_SCREENSHOTS`` = a folder, e.g. docs/img to refresh the README's pictures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import settings
from core.net import free_port
from tests.conftest import JANUARY
from tests.helpers import STOP_BOUND

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: nodes that must be visible on every orchestrator's page (ingestion and dbt alike)
NODES = ("flights", "weather", "stg_flights", "fct_flights", "carrier_month_performance")


@dataclass
class UI:
    name: str
    banner: re.Pattern
    open_page: Callable  # (page, match) -> None: log in / navigate to the pipeline's view


def _airflow(page, match: re.Match) -> None:
    url, password = match.group(1), match.group(2)
    page.goto(f"{url}/dags/quartet_pipeline")
    page.get_by_text("Sign into Airflow").or_(page.get_by_text("quartet_pipeline")).first.wait_for(
        timeout=60_000
    )
    if page.get_by_text("Sign into Airflow").count():  # the simple auth manager's login page
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/dags/quartet_pipeline.*"), timeout=60_000)
    page.goto(f"{url}/dags/quartet_pipeline/tasks")  # every task of the DAG, ingestion and dbt


def _goto_when_served(page, url: str, timeout: float = 300) -> None:
    """Some UIs announce their address before their server answers: retry until it does."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            page.goto(url)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _dagster(page, match: re.Match) -> None:
    # the asset graph upstream of a mart: raw (dlt) -> staging -> intermediate -> marts (dbt)
    url = match.group(1).rstrip("/")
    _goto_when_served(
        page,
        f"{url}/assets/marts/carrier_month_performance?view=lineage&lineageScope=upstream&lineageDepth=10",
    )
    page.wait_for_timeout(3000)
    skip = page.get_by_role("button", name="Skip")  # the community dialog of a fresh instance
    if skip.count():
        skip.click()


def _prefect(page, match: re.Match) -> None:
    # every task run of the finished flow runs: one per dlt resource, one per dbt node
    page.goto(f"{match.group(1).rstrip('/')}/runs?tab=task-runs")


def _temporal(page, match: re.Match) -> None:
    url = match.group(1).rstrip("/")
    base = re.match(r"(https?://[^/]+)", url).group(1)
    with urllib.request.urlopen(
        f"{base}/api/v1/namespaces/default/workflows", timeout=30
    ) as response:
        executions = json.load(response)["executions"]
    done = next(
        e for e in executions
        if e["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED" and e["type"]["name"] != "SourceWatcher"
    )  # fmt: skip
    workflow, run = done["execution"]["workflowId"], done["execution"]["runId"]
    page.goto(f"{base}/namespaces/default/workflows/{workflow}/{run}/history")


UIS = {
    "dagster": UI("dagster", re.compile(r"\[dagster\] UI: (\S+)"), _dagster),
    "airflow": UI(
        "airflow", re.compile(r"Airflow UI: (\S+)\s+\(user \w+, password (\S+?)\)"), _airflow
    ),
    "prefect": UI(
        "prefect", re.compile(r"Prefect UI: (\S+).*serving the deployments", re.DOTALL), _prefect
    ),
    "temporal": UI("temporal", re.compile(r"Temporal UI: (\S+) \(server"), _temporal),
}


@pytest.fixture
def running_ui(request, source_api, quartet_home) -> Iterator[Callable[[str], re.Match]]:
    """Start ``quartet ui <name>`` on a free port; stop it with Ctrl-C (SIGINT) afterwards."""
    started: list[subprocess.Popen] = []

    def start(name: str) -> re.Match:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.cli",
                "ui",
                name,
                "--port",
                str(free_port()),
                "--as-of",
                JANUARY,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=settings.REPO_ROOT,
            start_new_session=True,
        )
        started.append(proc)
        lines: list[str] = []
        found: list[re.Match] = []
        ready = threading.Event()

        def read() -> None:
            for line in proc.stdout:
                lines.append(line)
                match = UIS[name].banner.search("".join(lines))
                if match and not found:
                    found.append(match)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(timeout=900)
        assert found, f"`quartet ui {name}` never announced its UI:\n{''.join(lines[-60:])}"
        return found[0]

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.parametrize("name", sorted(UIS))
def test_ui_shows_the_pipeline_in_a_real_browser(name, running_ui, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed: `make browser` installs it"
    match = running_ui(name)
    shots = Path(os.environ.get("QUARTET_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            UIS[name].open_page(page, match)
            missing = []
            for node in NODES:
                try:
                    page.get_by_text(node, exact=False).first.wait_for(
                        state="attached", timeout=60_000
                    )
                except Exception:
                    missing.append(node)
            page.screenshot(path=str(shots / f"ui-{name}.png"), full_page=False)
            assert missing == [], f"{name} UI at {page.url} does not show {missing}"
        finally:
            browser.close()
