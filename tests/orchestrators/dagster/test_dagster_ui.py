"""``python -m orchestrators.dagster ui`` serves Dagster's webserver with the pipeline loaded: its
GraphQL API and, in a real browser, the page ``quartet ui`` prints first (the asset graph from the
raw tables to the marts), the runs on the Overview timeline, and nothing beyond loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core import settings
from core.net import free_port
from tests.browser import NODES, chromium_page, goto_when_served, missing_texts, screenshot
from tests.helpers import STOP_BOUND, assert_loopback_only, assert_token_on_no_command_line
from tests.orchestrators.dagster.exposure import assert_graphql_keeps_the_token, graphql

QUERY = """{
  assetNodes { assetKey { path } }
  runsOrError { ... on Runs { results {
    runId status jobName repositoryOrigin { repositoryName repositoryLocationName }
  } } }
  workspaceOrError { ... on Workspace { locationEntries { name } } }
  shouldShowNux
}"""


def _processes_mentioning(port: int) -> list[int]:
    """Pids whose command line names ``port`` (dagster dev, its webserver and daemon)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(port).encode() in argv and any(b"dagster" in a for a in argv):
                found.append(int(proc.name))
    return found


def test_ui_prints_the_graph_and_the_last_run_and_shows_its_runs_on_loopback_only(
    dagster_project, source_api, tmp_path
):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrators.dagster", "ui", "--port", str(port)],
        cwd=settings.REPO_ROOT,
        env={**os.environ, "SOURCE_API_URL": source_api.url, "SOURCE_API_TOKEN": source_api.token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(proc.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        data, deadline = None, time.monotonic() + 420
        while time.monotonic() < deadline and proc.poll() is None:
            answer = graphql(url, QUERY)
            data = answer and answer.get("data")
            served = data and data["assetNodes"] and data["runsOrError"]["results"]
            if served and any("Ctrl-C stops it" in line for line in printed):
                break
            time.sleep(2)
        assert proc.poll() is None, f"ui exited with {proc.returncode}: {''.join(printed)}"
        assert data, "the Dagster webserver did not answer"
        keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
        assert {"raw/flights", "staging/stg_flights", "marts/fct_flights"} <= keys
        runs = data["runsOrError"]["results"]
        assert any(run["status"] == "SUCCESS" for run in runs), runs
        # the community dialog is off (dagster.yaml `nux: enabled: false`)
        assert data["shouldShowNux"] is False
        # the Overview timeline places a run by its repository origin: a run without one is
        # left out. The runs the adapter made carry the code location dagster dev serves.
        (location,) = [entry["name"] for entry in data["workspaceOrError"]["locationEntries"]]
        for run in runs:
            assert run["repositoryOrigin"] == {
                "repositoryName": "__repository__",
                "repositoryLocationName": location,
            }, run

        # what quartet ui printed: the graph first, then the last run, no escape codes
        links = re.findall(r"(http://127\.0\.0\.1:\d+/\S+)", "".join(printed))
        assert links[0].startswith(f"{url}/asset-groups?expanded="), printed
        assert links[1] == f"{url}/runs/{runs[0]['runId']}", printed
        assert not any("\x1b[" in line for line in printed), printed

        # no login in Dagster's open-source UI: loopback only, and no answer carries the token
        sockets = assert_loopback_only(proc.pid)
        assert any(s[1] == port for s in sockets), sockets  # the webserver is among them
        assert_token_on_no_command_line(source_api.token, proc.pid)
        assert_graphql_keeps_the_token(url, location, source_api.token)

        # a viewport where the graph fits with every node in full (a narrower one shortens
        # the names: "carri…_performance")
        with chromium_page(width=2000, height=1500) as page:
            goto_when_served(page, links[0])
            page.wait_for_timeout(3000)
            assert page.get_by_text("Join the Dagster community").count() == 0
            missing = missing_texts(page, NODES)
            # each node's last materialization and checks, as the runs left them, loaded
            passed = page.get_by_text(re.compile(r"^\d+ / \d+ Passed$"))
            passed.first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            shot = screenshot(page, "ui-dagster", tmp_path)
            assert missing == [], f"{page.url} does not show {missing} (see {shot})"
            page.goto(f"{url}/overview/activity/timeline")
            assert missing_texts(page, ["full_pipeline"]) == [], "the timeline shows no run"
            assert page.get_by_text("No runs or scheduled ticks").count() == 0
    finally:
        proc.send_signal(signal.SIGTERM)  # the ui stops dagster dev (its process group) itself
        try:
            proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert _processes_mentioning(port) == []  # no webserver, daemon or code server left behind
