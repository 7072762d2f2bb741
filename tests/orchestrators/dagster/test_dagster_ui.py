"""``python -m orchestrators.dagster ui`` serves Dagster's webserver with the pipeline loaded: its
GraphQL API and, in a real browser, the asset graph from the raw tables to the marts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from core import settings
from core.net import free_port
from tests.browser import assert_ui_shows_the_pipeline
from tests.helpers import STOP_BOUND

QUERY = """{
  assetNodes { assetKey { path } }
  runsOrError { ... on Runs { results { runId status jobName } } }
}"""


def _graphql(port: int) -> dict | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]
    except (OSError, KeyError, ValueError, urllib.error.URLError):
        return None


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


def test_ui_serves_the_asset_graph_and_a_finished_run_and_sigterm_stops_it_all(
    dagster_project, source_api, tmp_path
):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrators.dagster", "ui", "--port", str(port)],
        cwd=settings.REPO_ROOT,
        env={**os.environ, "SOURCE_API_URL": source_api.url, "SOURCE_API_TOKEN": source_api.token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        data, deadline = None, time.monotonic() + 420
        while time.monotonic() < deadline and proc.poll() is None:
            data = _graphql(port)
            if data and data["assetNodes"] and data["runsOrError"]["results"]:
                break
            time.sleep(2)
        assert proc.poll() is None, f"ui exited with {proc.returncode}"
        assert data, "the Dagster webserver did not answer"
        keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
        assert {"raw/flights", "staging/stg_flights", "marts/fct_flights"} <= keys
        runs = data["runsOrError"]["results"]
        assert any(run["status"] in ("SUCCESS", "FAILURE") for run in runs)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
        assert b"Dagster" in page
        assert _processes_mentioning(port)  # dagster dev serves on that port
        assert_ui_shows_the_pipeline("dagster", f"http://127.0.0.1:{port}", tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)  # the ui stops dagster dev (its process group) itself
        try:
            proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert _processes_mentioning(port) == []  # no webserver, daemon or code server left behind
