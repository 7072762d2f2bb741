"""``python -m orchestrators.prefect ui``: Prefect's own server and UI, the deployments served, a
finished run to look at (its task runs, in a real browser), and the event trigger: new data in
the source API starts a run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core import kit, settings
from core.net import free_port
from core.source_api import SourceAPIConfig, set_clock, start_process
from orchestrators.prefect import NEW_DATA_EVENT
from tests.browser import assert_ui_shows_the_pipeline
from tests.helpers import STOP_BOUND


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ui exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def flow_runs(api: str, **flow_run_filter) -> list[dict]:
    response = httpx.post(
        f"{api}/flow_runs/filter",
        json={
            "flows": {"name": {"any_": ["quartet-pipeline"]}},
            "flow_runs": flow_run_filter,
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 50,
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


@pytest.fixture
def ui(tmp_path: Path):
    """The ui command in its own QUARTET_HOME, over its own source API (clock: January)."""
    api_proc, api_url = start_process(
        SourceAPIConfig(as_of="2013-01-31").argv(), settings.DEV_API_TOKEN
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        QUARTET_HOME=str(tmp_path),
        SOURCE_API_URL=api_url,
        SOURCE_API_TOKEN=settings.DEV_API_TOKEN,
        # each poll is a flow-run process of its own (~3 s to start); on a loaded machine polls
        # every 5 s outran their own exits and piled up (56 processes at a load of 55)
        QUARTET_PREFECT_WATCH_SECONDS="20",
    )
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrators.prefect", "ui", "--port", str(port)],
            env=env,
            cwd=settings.REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}", api_url, log
    finally:
        proc.send_signal(signal.SIGTERM)  # the ui stops the server and runs it started
        try:
            proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        api_proc.terminate()
        api_proc.wait(timeout=10)
    with socket.socket() as sock:  # the Prefect server the ui started has stopped with it
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_ui_serves_pipeline_and_new_data_triggers_a_run(ui, tmp_path) -> None:
    proc, base, api_url, log = ui
    api = f"{base}/api"

    def served() -> list[dict]:
        response = httpx.post(f"{api}/deployments/filter", json={"limit": 50}, timeout=10)
        response.raise_for_status()
        names = {d["name"] for d in response.json()}
        return response.json() if "poll" in names else []

    first = wait_for(
        "a finished pipeline run",
        lambda: flow_runs(api, state={"type": {"any_": ["COMPLETED"]}}),
        proc,
        log,
    )
    deployments = {d["name"]: d for d in wait_for("the served deployments", served, proc, log)}
    assert set(deployments) == {"full", "ingestion", "transformation", "backfill", "poll"}
    assert [s["schedule"]["cron"] for s in deployments["full"]["schedules"]] == [
        kit.policy().schedule
    ]

    page = httpx.get(base, timeout=10)
    assert page.status_code == 200 and "<title>Prefect Server</title>" in page.text
    assert_ui_shows_the_pipeline("prefect", base, tmp_path)

    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
    (trigger,) = [a for a in automations if NEW_DATA_EVENT in a["trigger"]["expect"]]
    assert trigger["actions"][0]["deployment_id"] == deployments["full"]["id"]

    # New data is published: the watcher emits the event, the trigger runs the deployment.
    set_clock(api_url, settings.DEV_API_TOKEN, "2013-02-28")
    triggered = wait_for(
        "a pipeline run started by the trigger",
        lambda: [
            r
            for r in flow_runs(api, deployment_id={"any_": [deployments["full"]["id"]]})
            if r["parameters"].get("as_of") == "2013-02-28"
        ],
        proc,
        log,
    )
    assert triggered[0]["id"] not in {r["id"] for r in first}
    assert settings.DEV_API_TOKEN not in log.read_text()  # the token comes from the Secret block
