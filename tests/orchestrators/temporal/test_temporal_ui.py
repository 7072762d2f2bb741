"""``ui`` serves the Temporal UI with the pipeline loaded: a finished run (its Timeline, in a real
browser, shows the activities as a graph), the schedule, a worker; nothing listens beyond
loopback and no answer of its API carries the source token."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from temporal_helpers import texts

from core import settings
from core.net import free_port
from orchestrators.temporal import TASK_QUEUE
from tests.browser import NODES, chromium_page, missing_texts, screenshot
from tests.helpers import (
    JANUARY,
    STOP_BOUND,
    assert_loopback_only,
    assert_token_on_no_command_line,
)

UI_WAIT_MS = 60_000  # how long the browser waits for the UI to show something: a bound


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:  # no credentials: there are none
        return json.load(response)


def test_ui_serves_the_finished_run_schedule_and_watcher(source_api, fresh_home, tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    log = open(tmp_path / "ui.log", "w+")  # noqa: SIM115
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrators.temporal",
            "ui",
            "--port",
            str(port),
            "--as-of",
            JANUARY,
        ],
        env=env,
        cwd=settings.REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 900  # a bound on a loaded machine, not a timing claim
        ready = None
        while ready is None and time.monotonic() < deadline and ui.poll() is None:
            log.seek(0)
            ready = re.search(r"Temporal UI on (\S+) \(server (\S+);", log.read())
            time.sleep(0.5)
        log.seek(0)
        output = log.read()
        assert ready, f"ui did not come up:\n{output[-3000:]}"
        base = f"http://127.0.0.1:{port}"
        assert ready.group(1) == base
        server_host, server_port = ready.group(2).split(":")
        # the first page it prints is the finished run's graph, then every run
        links = re.findall(r"(http://\S+)", output.split("Temporal UI on")[0])
        workflow = f"quartet-full-as-of-{JANUARY}"
        graph = re.fullmatch(
            rf"{base}/namespaces/default/workflows/{workflow}/([\w-]+)/timeline", links[0]
        )
        assert graph, links
        run_id = graph.group(1)
        assert f"{base}/namespaces/default/workflows" in links[1:], links

        with urllib.request.urlopen(base, timeout=30) as page:  # the UI's landing page
            assert page.status == 200 and "<html" in page.read().decode().lower()
        executions = get_json(f"{base}/api/v1/namespaces/default/workflows")["executions"]
        status = {e["execution"]["workflowId"]: e["status"] for e in executions}
        assert status[workflow] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        assert status["quartet-source-watcher"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        schedules = get_json(f"{base}/api/v1/namespaces/default/schedules")["schedules"]
        assert [s["scheduleId"] for s in schedules] == ["quartet-monthly"]
        pollers = get_json(f"{base}/api/v1/namespaces/default/task-queues/{TASK_QUEUE}")
        assert pollers.get("pollers"), pollers  # the worker is there, polling

        # who may look: anyone on this machine (no login), so nothing listens beyond loopback
        # (frontend, UI, HTTP API, metrics and the server's internal ports), the token is on no
        # command line, and the run's history, read without credentials, does not carry it
        sockets = assert_loopback_only(ui.pid)
        assert {int(server_port), port} <= {p for _, p, _, _ in sockets}, sockets
        assert_token_on_no_command_line(source_api.token, ui.pid)
        history = get_json(
            f"{base}/api/v1/namespaces/default/workflows/{workflow}/history?execution.runId={run_id}"
        )
        strings = texts(history)
        assert any("ingest_resource" in s for s in strings), "no activity in the history read"
        assert any('"flights"' in s for s in strings), "payloads were not decoded"
        for answer in (strings, texts(executions), texts(pollers)):
            assert not [s for s in answer if source_api.token in s]

        # the page it prints first, in a real browser: the run as a graph, one bar per unit
        with chromium_page(height=1400) as page:
            page.goto(links[0])
            try:  # the screenshot shows what the UI showed, passed or not
                timeline = page.get_by_role("img", name=f"Workflow {workflow}: Completed")
                timeline.wait_for(state="attached", timeout=UI_WAIT_MS)
                missing = missing_texts(page, NODES)
            finally:
                screenshot(page, "ui-temporal", tmp_path)
        assert missing == [], f"the Timeline at {links[0]} does not show {missing}"
    finally:
        ui.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert ui.wait(timeout=STOP_BOUND) == 130  # the kit's exit code for an interrupted command
        log.close()
    with socket.socket() as sock:  # and the server it started is gone
        assert sock.connect_ex((server_host, int(server_port))) != 0
