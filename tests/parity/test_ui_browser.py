"""Each orchestrator's own UI, opened in a real browser (Debian's chromium, headless, driven by
Playwright): `quartet ui <name>` serves the pipeline, and the page shows its nodes - the asset
graph, the DAG's tasks, the flow run's task runs, the workflow's activities. A screenshot of each
is saved (``QUARTET_SCREENSHOTS`` = a folder, e.g. docs/img to refresh the README's pictures).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from core import settings
from core.net import free_port
from tests.browser import NODES, chromium_page, goto_when_served, missing_texts, screenshot
from tests.conftest import JANUARY
from tests.helpers import STOP_BOUND


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


def _dagster(page, match: re.Match) -> None:
    # the asset graph upstream of a mart: raw (dlt) -> staging -> intermediate -> marts (dbt)
    url = match.group(1).rstrip("/")
    goto_when_served(
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
    match = running_ui(name)
    with chromium_page() as page:
        UIS[name].open_page(page, match)
        missing = missing_texts(page, NODES)
        screenshot(page, f"ui-{name}", tmp_path)
        assert missing == [], f"{name} UI at {page.url} does not show {missing}"
