"""``ui`` serves the Temporal UI with the pipeline loaded: a finished run (its history, in a real
browser, names the activities), the schedule, a worker."""

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

from core import settings
from core.net import free_port
from orchestrators.temporal import TASK_QUEUE
from tests.browser import assert_ui_shows_the_pipeline
from tests.helpers import JANUARY, STOP_BOUND


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
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
            ready = re.search(r"Temporal UI: (\S+) \(server (\S+);", log.read())
            time.sleep(0.5)
        log.seek(0)
        assert ready, f"ui did not come up:\n{log.read()[-3000:]}"
        base = f"http://127.0.0.1:{port}"
        assert ready.group(1).startswith(base)
        server_host, server_port = ready.group(2).split(":")

        with urllib.request.urlopen(ready.group(1), timeout=30) as page:
            assert page.status == 200 and "<html" in page.read().decode().lower()
        executions = get_json(f"{base}/api/v1/namespaces/default/workflows")["executions"]
        status = {e["execution"]["workflowId"]: e["status"] for e in executions}
        assert status[f"quartet-full-as-of-{JANUARY}"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        assert status["quartet-source-watcher"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        schedules = get_json(f"{base}/api/v1/namespaces/default/schedules")["schedules"]
        assert [s["scheduleId"] for s in schedules] == ["quartet-monthly"]
        pollers = get_json(f"{base}/api/v1/namespaces/default/task-queues/{TASK_QUEUE}")
        assert pollers.get("pollers"), pollers  # the worker is there, polling
        assert_ui_shows_the_pipeline("temporal", ready.group(1), tmp_path)
    finally:
        ui.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert ui.wait(timeout=STOP_BOUND) == 130  # the kit's exit code for an interrupted command
        log.close()
    with socket.socket() as sock:  # and the server it started is gone
        assert sock.connect_ex((server_host, int(server_port))) != 0
