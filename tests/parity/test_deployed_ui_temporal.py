"""Temporal's deployed UI in a real browser: the workflow started through the client is there.

`quartet up temporal` (server with its UI, two workers), `quartet run temporal --deployed`, then
Debian's chromium (headless, driven by Playwright) opens the workflow's timeline view in the UI
the server serves and finds the run's activities on it. Runs in .venvs/base.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import JANUARY, quartet

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def deployed_run(source_api, tmp_path, monkeypatch) -> Iterator[dict]:
    assert Path(CHROMIUM).exists(), "chromium is not installed: `make browser` installs it"
    monkeypatch.setenv("QUARTET_HOME", str(tmp_path / "home"))
    up = quartet("up", "temporal", timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        run = quartet("run", "temporal", "--deployed", "--as-of", JANUARY, timeout=900)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        status = json.loads(quartet("status", "temporal", "--json").stdout)
        ui = status["server"]["url"].rstrip("/")
        with urllib.request.urlopen(f"{ui}/api/v1/namespaces/default/workflows", timeout=30) as r:
            executions = json.load(r)["executions"]
        wanted = f"quartet-full-as-of-{JANUARY}"
        done = next(e for e in executions if e["execution"]["workflowId"] == wanted)
        yield {"ui": ui, "workflow": wanted, "run": done["execution"]["runId"], "done": done}
    finally:
        quartet("down", "temporal", timeout=120)


@pytest.mark.deployed_pending
def test_deployed_ui_shows_the_submitted_workflow_on_its_timeline(deployed_run, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    assert deployed_run["done"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
    base, workflow, run = deployed_run["ui"], deployed_run["workflow"], deployed_run["run"]
    shots = Path(os.environ.get("QUARTET_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{base}/namespaces/default/workflows/{workflow}/{run}/timeline")
            missing = []
            for text in (workflow, "ingest flights", "dbt build fct_flights"):
                try:
                    page.get_by_text(text, exact=False).first.wait_for(
                        state="attached", timeout=60_000
                    )
                except Exception:
                    missing.append(text)
            page.screenshot(path=str(shots / "ui-temporal-deployed.png"))
            assert missing == [], f"the timeline at {page.url} does not show {missing}"
        finally:
            browser.close()
