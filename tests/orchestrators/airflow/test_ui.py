"""``ui`` starts api-server, scheduler and dag-processor with the pipeline and a finished run: the
REST API answers, and a real browser, logged in, shows the DAG's ingestion and dbt tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from core import settings
from core.net import free_port
from orchestrators.airflow import PIPELINE_DAG
from tests.browser import assert_ui_shows_the_pipeline
from tests.helpers import STOP_BOUND


def call(url: str, token: str | None = None, body: dict | None = None) -> dict | str:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return json.loads(text) if response.headers.get_content_type() == "application/json" else text


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
            if line.startswith("Airflow UI:"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout=420)
    line = next((x for x in banner if x.startswith("Airflow UI:")), None)
    assert line, "".join(banner[-40:])
    url, password = line.split()[2], line.split("password ")[1].rstrip(")\n")
    yield url, password, proc, banner
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=STOP_BOUND)


def test_ui_serves_the_pipeline_a_finished_run_and_stops_on_ctrl_c(ui, source_api, tmp_path):
    url, password, proc, banner = ui
    assert "<title>Airflow</title>" in call(f"{url}/")
    token = call(f"{url}/auth/token", body={"username": "admin", "password": password})[
        "access_token"
    ]
    tasks = {t["task_id"] for t in call(f"{url}/api/v2/dags/{PIPELINE_DAG}/tasks", token)["tasks"]}
    assert {"ingest.flights", "dbt.stg_flights_model_build", "dbt.fct_flights_model_build"} <= tasks
    runs = call(f"{url}/api/v2/dags/{PIPELINE_DAG}/dagRuns?state=success", token)
    assert runs["total_entries"] >= 1
    assets = {a["name"] for a in call(f"{url}/api/v2/assets?limit=100", token)["assets"]}
    assert {"raw.flights", "marts.route_stats", "marts.fct_flights"} <= assets
    assert_ui_shows_the_pipeline("airflow", url, tmp_path, password)
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
    # the API token is an Airflow connection from the environment: never shown by the UI
    assert source_api.token not in json.dumps(call(f"{url}/api/v2/connections", token))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=STOP_BOUND) == 0
    assert "stopped dag-processor, scheduler and api-server" in "".join(banner)
    with pytest.raises(OSError):
        call(f"{url}/api/v2/monitor/health")
