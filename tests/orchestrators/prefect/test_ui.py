"""``python -m orchestrators.prefect ui``: Prefect's own server and UI behind its credential, the
deployments served, a finished run to look at (the page the command prints first, in a real
browser, signed in), and the event trigger: new data in the source API starts a run."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core import kit, lineage, settings
from core.net import free_port
from core.source_service import SourceAPIConfig, set_clock, start_process
from orchestrators.prefect import NEW_DATA_EVENT
from tests.browser import chromium_page, missing_texts, screenshot
from tests.helpers import STOP_BOUND, assert_loopback_only, assert_token_on_no_command_line
from tests.orchestrators.prefect.prefect_ui import (
    assert_secrets_need_the_credential,
    basic,
    open_flow_run,
    sign_in,
)


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


def flow_runs(api: str, auth: tuple[str, str], **flow_run_filter) -> list[dict]:
    response = httpx.post(
        f"{api}/flow_runs/filter",
        json={
            "flows": {"name": {"any_": ["quartet-pipeline"]}},
            "flow_runs": flow_run_filter,
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 50,
        },
        timeout=10,
        auth=auth,
    )
    response.raise_for_status()
    return response.json()


def printed(log: Path, pattern: str) -> str:
    """The first match of ``pattern`` (one group) in what the ui command printed so far."""
    found = re.search(pattern, log.read_text())
    return found.group(1) if found else ""


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
        # each poll is a flow-run process of its own: on a loaded machine, polls much shorter
        # than a process's start outran their own exits and piled up
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

    # what the command prints once its first run ended: the run's graph first, the credential's
    # file (never the credential)
    run_page = wait_for(
        "the link to the first run",
        lambda: printed(log, r"the run, as a graph: +(http://\S+)"),
        proc,
        log,
    )
    credential_file = Path(  # printed a line after the run's link: wait for it too
        wait_for(
            "the credential's file",
            lambda: printed(log, r"sign in with the contents of (\S+) \(mode 600\)"),
            proc,
            log,
        )
    )
    assert credential_file.stat().st_mode & 0o777 == 0o600
    auth_string = credential_file.read_text().strip()
    auth = basic(auth_string)
    assert auth_string not in log.read_text()
    run_id = run_page.rsplit("/", 1)[1]
    assert run_page == f"{base}/runs/flow-run/{run_id}"

    # one line per unit, once each, in the order units end; a model's line counts the dbt tests
    # attached to it (the canonical rule every orchestrator's line follows)
    first_run = log.read_text().split("the run, as a graph:")[0]
    graph = lineage.canonical()
    printed_models = [
        line.split()[2] for line in first_run.splitlines() if line.startswith("[prefect] dbt ")
    ]
    models = [m for m in graph.order() if not m.startswith("raw.")]
    assert sorted(printed_models) == sorted(models)  # each model once
    for model in models:  # after every model it reads
        assert all(
            printed_models.index(parent) < printed_models.index(model)
            for parent in graph.parents(model)
            if parent in printed_models
        ), (model, printed_models)
        (line,) = [x for x in first_run.splitlines() if x.startswith(f"[prefect] dbt     {model} ")]
        assert line.endswith(f"{len(graph.tests[model])} tests passed"), line
    assert first_run.count("[prefect] ingest  flights ") == 1
    assert "\x1b[" not in log.read_text()  # no colour codes into a file

    # nothing of it listens beyond loopback; no command line carries the token or the credential;
    # the server refuses the Secret block to a caller without the credential
    sockets = assert_loopback_only(proc.pid)
    assert int(base.rsplit(":", 1)[1]) in {port for _ip, port, _pid, _cmd in sockets}
    assert_token_on_no_command_line(settings.DEV_API_TOKEN, proc.pid)
    assert_token_on_no_command_line(auth_string, proc.pid)
    assert_secrets_need_the_credential(api, auth_string, settings.DEV_API_TOKEN)

    def served() -> list[dict]:
        response = httpx.post(
            f"{api}/deployments/filter", json={"limit": 50}, timeout=10, auth=auth
        )
        response.raise_for_status()
        names = {d["name"] for d in response.json()}
        return response.json() if "poll" in names else []

    (first,) = flow_runs(api, auth, id={"any_": [run_id]})
    assert first["state_type"] == "COMPLETED"
    deployments = {d["name"]: d for d in wait_for("the served deployments", served, proc, log)}
    assert set(deployments) == {"full", "ingestion", "transformation", "backfill", "poll"}
    assert [s["schedule"]["cron"] for s in deployments["full"]["schedules"]] == [
        kit.policy().schedule
    ]

    page = httpx.get(base, timeout=10)
    assert page.status_code == 200 and "<title>Prefect Server</title>" in page.text
    with chromium_page() as browser:
        # the page the command printed first: the run, its graph drawn with its two subflows
        sign_in(browser, run_page, auth_string)
        nodes = open_flow_run(browser, base, run_id, "Subflow Runs")
        heading = browser.locator(".page-heading-flow-run")
        missing = missing_texts(heading, [first["name"], "Completed", "quartet-pipeline"])
        browser.wait_for_timeout(2000)  # the canvas draws after the data arrives: for the picture
        browser.goto(run_page)
        browser.locator(".flow-run-graph .run-graph__stage canvas").wait_for(timeout=60_000)
        browser.wait_for_timeout(2000)
        screenshot(browser, "ui-prefect", tmp_path)
        assert missing == [], f"the run's page {run_page} does not show {missing}"
        assert sorted(nodes.values()) == ["COMPLETED", "COMPLETED"], nodes
        assert {label.split(" / ")[0] for label in nodes} == {
            "quartet-ingestion",
            "quartet-transformation",
        }, nodes

    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10, auth=auth).json()
    (trigger,) = [a for a in automations if NEW_DATA_EVENT in a["trigger"]["expect"]]
    assert trigger["actions"][0]["deployment_id"] == deployments["full"]["id"]

    # New data is published: the watcher emits the event, the trigger runs the deployment.
    set_clock(api_url, settings.DEV_API_TOKEN, "2013-02-28")
    triggered = wait_for(
        "a pipeline run started by the trigger",
        lambda: [
            r
            for r in flow_runs(api, auth, deployment_id={"any_": [deployments["full"]["id"]]})
            if r["parameters"].get("as_of") == "2013-02-28"
        ],
        proc,
        log,
    )
    assert triggered[0]["id"] != run_id
    assert settings.DEV_API_TOKEN not in log.read_text()  # the token comes from the Secret block
