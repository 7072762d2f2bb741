"""``ui`` starts api-server, dag-processor, scheduler and triggerer with the pipeline and a
finished run: the REST API answers, every component is healthy, nothing listens beyond loopback
or hands out the source token, a task's log shows, and a real browser, signed in, draws the run
``ui`` prints first as a graph of its ingestion and dbt tasks."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from core import settings
from core.kit import wait_until
from core.net import free_port
from orchestrators.airflow import MARTS_DAG, PIPELINE_DAG, SOURCE_API_CONN
from tests.browser import NODES, chromium_page, missing_texts, screenshot
from tests.helpers import STOP_BOUND, assert_loopback_only, assert_token_on_no_command_line


def call(
    url: str, token: str | None = None, body: dict | None = None, method: str | None = None
) -> dict | str:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body else None, method=method
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text) if response.headers.get_content_type() == "application/json" else text


#: a line of ``ui``'s banner: ``[airflow] <what> <url>  (<note>)``
LINK = re.compile(r"^\[airflow\] (last run|pipeline|assets)\s+(http\S+)")


@pytest.fixture
def ui(airflow_home, source_api):
    """``python -m orchestrators.airflow ui`` on a free port; stopped with Ctrl-C (SIGINT)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrators.airflow", "ui", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=settings.REPO_ROOT,
        env=os.environ,
    )
    banner: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("[airflow] Ctrl-C to stop"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout=420)
    assert any(x.startswith("[airflow] Ctrl-C to stop") for x in banner), "".join(banner[-40:])
    yield proc, banner
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=STOP_BOUND)


def refused(url: str, token: str | None = None) -> int:
    """The HTTP status of a refused call (fails when the call is answered)."""
    with pytest.raises(urllib.error.HTTPError) as refusal:
        call(url, token)
    return refusal.value.code


def test_ui_serves_the_pipeline_a_finished_run_and_stops_on_ctrl_c(ui, source_api, tmp_path):
    proc, banner = ui
    text = "".join(banner)
    # every line is one of Quartet's (Airflow's and Cosmos' own output goes to the log file):
    # no unprefixed config notice, no Cosmos warning, no escape codes into a pipe
    assert [line for line in banner if not line.startswith("[airflow] ")] == [], text
    assert "WARNING cosmos" not in text and "\x1b[" not in text, text
    links = [m.groups() for m in map(LINK.match, banner) if m]
    # lands on the last run's page; then the DAG's page and the Assets
    assert [what for what, _ in links] == ["last run", "pipeline", "assets"], text
    landing = links[0][1]
    url = landing.split("/dags/", 1)[0]
    assert landing.startswith(f"{url}/dags/{PIPELINE_DAG}/runs/manual__")
    # the admin password is not printed: the path of its owner-only file is
    found = re.search(r"password is in (\S+)", text)
    assert found, text
    passwords = Path(found.group(1))
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    password = json.loads(passwords.read_text())["admin"]
    assert password not in text and source_api.token not in text
    assert "<title>Airflow</title>" in call(f"{url}/")
    token = call(f"{url}/auth/token", body={"username": "admin", "password": password})[
        "access_token"
    ]
    tasks = {t["task_id"] for t in call(f"{url}/api/v2/dags/{PIPELINE_DAG}/tasks", token)["tasks"]}
    assert {"ingest.flights", "dbt.stg_flights_model_build", "dbt.fct_flights_model_build"} <= tasks
    runs = call(f"{url}/api/v2/dags/{PIPELINE_DAG}/dagRuns?state=success", token)
    assert runs["total_entries"] >= 1
    assert any(landing.endswith(quote(r["dag_run_id"], safe="")) for r in runs["dag_runs"])
    assets = {a["name"] for a in call(f"{url}/api/v2/assets?limit=100", token)["assets"]}
    assert {"raw.flights", "marts.route_stats", "marts.fct_flights"} <= assets
    # every component the UI's health badge shows is running, the triggerer included
    health = call(f"{url}/api/v2/monitor/health")
    assert {k: v["status"] for k, v in health.items()} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }

    # nothing of it listens beyond loopback (the scheduler and the triggerer run without their
    # log server, which binds every interface), and no command line carries the source token
    sockets = assert_loopback_only(proc.pid)
    assert ("127.0.0.1", int(url.rsplit(":", 1)[1])) in {(ip, port) for ip, port, *_ in sockets}
    assert_token_on_no_command_line(source_api.token, proc.pid)
    # the source API's connection: refused without credentials, by the REST API and by the
    # execution API (which hands connections to task processes); with the admin's login, the
    # REST API does not know it (a connection from the environment is not in the metadata DB)
    # and the execution API refuses a user's token (it takes task tokens only)
    connection = f"/connections/{SOURCE_API_CONN}"
    for path in ("/api/v2/connections", f"/api/v2{connection}", f"/execution{connection}"):
        assert refused(f"{url}{path}") in (401, 403), path
    assert refused(f"{url}/api/v2{connection}", token) == 404
    assert refused(f"{url}/execution{connection}", token) == 403
    assert source_api.token not in json.dumps(call(f"{url}/api/v2/connections", token))

    # a task the scheduler runs: its log, written by the task into the shared log folder, is
    # served by the api-server with no log server running
    call(f"{url}/api/v2/dags/{MARTS_DAG}", token, {"is_paused": False}, method="PATCH")
    run_id = call(
        f"{url}/api/v2/dags/{MARTS_DAG}/dagRuns", token, {"logical_date": None, "conf": {}}
    )["dag_run_id"]
    run_path = f"{url}/api/v2/dags/{MARTS_DAG}/dagRuns/{quote(run_id, safe='')}"
    wait_until(
        lambda: call(run_path, token)["state"] in ("success", "failed"),
        what=f"{MARTS_DAG} run {run_id}",
        timeout=STOP_BOUND,
        interval=1,
    )
    assert call(run_path, token)["state"] == "success"
    log = call(f"{run_path}/taskInstances/report_marts/logs/1", token)
    shown = json.dumps(log)
    # (the leaf models it waits on: route_stats reads fct_flights, which is not one)
    assert "marts.route_stats:" in shown and " rows" in shown, shown[:2000]

    assert_the_landing_page_draws_the_run(landing, password, tmp_path)
    # a backfill of a range through the REST API: one run per month, the month its data interval
    dry_run = call(
        f"{url}/api/v2/backfills/dry_run",
        token,
        {
            "dag_id": PIPELINE_DAG,
            "from_date": "2013-01-01T00:00:00Z",
            "to_date": "2013-03-01T00:00:00Z",
            "reprocess_behavior": "completed",
        },
    )
    assert [b["logical_date"][:10] for b in dry_run["backfills"]] == [
        "2013-01-01",
        "2013-02-01",
        "2013-03-01",
    ]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=STOP_BOUND) == 0
    assert "stopped api-server, dag-processor, scheduler, triggerer" in "".join(banner)
    with pytest.raises(OSError):
        call(f"{url}/api/v2/monitor/health")


def assert_the_landing_page_draws_the_run(landing: str, password: str, tmp_path: Path) -> None:
    """The page ``ui`` prints first, in chromium, signed in: the run as a graph (every task
    group expanded) with the ingestion and dbt tasks as nodes; screenshot ``ui-airflow``."""
    with chromium_page() as page:
        page.goto(landing)
        page.get_by_text("Sign into Airflow").wait_for(timeout=60_000)
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        # back on the printed page, signed in
        page.wait_for_url(re.compile(rf".*/dags/{PIPELINE_DAG}/runs/.+"), timeout=60_000)
        # a fresh browser opens the run beside the grid of runs; the graph is the other view
        page.get_by_role("button", name="Show Graph").click(timeout=60_000)
        page.get_by_test_id("expand-all-button").click(timeout=60_000)
        graph = page.locator(".react-flow__nodes")
        missing = missing_texts(graph, NODES)
        page.wait_for_timeout(2000)  # the graph's layout settles after its nodes appear
        screenshot(page, "ui-airflow", tmp_path)
    assert missing == [], f"the Airflow UI at {landing} does not draw {missing}"
