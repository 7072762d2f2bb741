"""Deployed mode: api-server, dag-processor, scheduler and triggerer on PostgreSQL, runs submitted
through the REST API, a worker killed mid-load, a failed dbt task cleared and resumed, the
scheduler killed during a backfill and started again.

One deployment for the module (``up`` once, ``down`` at the end); every run goes through it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path

import pytest

from core import settings
from orchestrators.airflow import NAME, PIPELINE_DAG, SOURCE_API_CONN, TRANSFORM_DAG
from tests.browser import NODES, chromium_page, missing_texts, screenshot
from tests.helpers import (
    JANUARY,
    assert_loopback_only,
    assert_same_as_bare,
    assert_token_on_no_command_line,
    fresh_warehouse,
    months_loaded,
    quartet,
)


def airflow(verb: str, *args: str) -> subprocess.CompletedProcess:
    """``quartet VERB airflow ARGS`` as a user runs it."""
    return quartet(verb, NAME, *args, timeout=1800)


@pytest.fixture(scope="module")
def deployed(quartet_home: Path, bare_january):
    from lab import postgres

    folder = None
    if not os.environ.get(postgres.URL_ENV) and not os.environ.get(postgres.HOME_ENV):
        # a server of this test session; the postgres user must reach its folder (the test
        # home is private to this user)
        folder = Path(tempfile.mkdtemp(prefix="quartet-airflow-pg-"))
        folder.chmod(0o755)
        os.environ[postgres.HOME_ENV] = str(folder)
    ours = not os.environ.get(postgres.URL_ENV) and postgres.status() is None
    # the deployment runs its own source API (with a generated token), not the session's
    session_api = {
        k: os.environ.pop(k, None)
        for k in (settings.SOURCE_API_URL_ENV, settings.SOURCE_API_TOKEN_ENV)
    }
    up = airflow("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        from orchestrators.airflow.harness import deploy

        yield deploy
    finally:
        down = airflow("down")
        os.environ.update({k: v for k, v in session_api.items() if v is not None})
        if ours:
            postgres.down()
        if folder is not None:
            os.environ.pop(postgres.HOME_ENV, None)
            shutil.rmtree(folder, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    assert "stopped scheduler" in down.stdout


@pytest.fixture(scope="module")
def api(deployed):
    return deployed.api()


def task_instances(api, dag_id: str, run_id: str) -> dict[str, dict]:
    found = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")
    return {ti["task_id"]: ti for ti in found["task_instances"]}


def last_run(api, dag_id: str = PIPELINE_DAG) -> dict:
    return api.get(f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=1")["dag_runs"][0]


def test_up_is_idempotent_and_status_names_every_service(deployed):
    before = deployed.status()
    assert set(before) == {"source-api", "api-server", "dag-processor", "scheduler", "triggerer"}
    assert all(s["ready"] for s in before.values()), before
    again = airflow("up")
    assert again.returncode == 0, again.stderr
    assert {n: s["pid"] for n, s in deployed.status().items()} == {
        n: s["pid"] for n, s in before.items()
    }
    listed = airflow("status")
    assert listed.returncode == 0 and listed.stdout.count("healthy") == len(before)
    # every service listens on loopback only (the scheduler and the triggerer run without their
    # log server, which binds every interface), and no command line carries the source token
    pids = [s["pid"] for s in before.values()]
    sockets = assert_loopback_only(*pids)
    assert ("127.0.0.1", deployed.ports().api) in {(ip, port) for ip, port, *_ in sockets}
    assert_token_on_no_command_line(deployed.source_api_token(), *pids)


def rest_triggered_run(deployed, api) -> dict:
    """The newest successful run triggered through the REST API (a manual run: ``quartet run
    airflow --deployed`` posts one too), else one triggered and followed to its end now: no
    dependency on which tests ran before."""
    done = api.get(
        f"/api/v2/dags/{PIPELINE_DAG}/dagRuns"
        "?run_type=manual&state=success&order_by=-start_date&limit=1"
    )["dag_runs"]
    if done:
        return done[0]
    api.call("PATCH", f"/api/v2/dags/{PIPELINE_DAG}", {"is_paused": False})
    run_id = api.call(
        "POST",
        f"/api/v2/dags/{PIPELINE_DAG}/dagRuns",
        {"logical_date": None, "conf": {"as_of": JANUARY}},
    )["dag_run_id"]
    return deployed.follow(api, run_id)


def run_graph(page, deployed, run_id: str):
    """Log into the api-server's UI as the simple auth manager's admin, open the run's page and
    show the DAG's graph with every task group expanded; returns the graph's nodes."""
    from orchestrators.airflow.harness import environment

    ui = f"http://127.0.0.1:{deployed.ports().api}"
    page.goto(f"{ui}/dags/{PIPELINE_DAG}")
    page.get_by_text("Sign into Airflow").wait_for(timeout=60_000)
    page.get_by_label("Username").fill(environment.USER)
    page.get_by_label("Password").fill(environment.password(deployed.home()))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(rf".*/dags/{PIPELINE_DAG}.*"), timeout=60_000)
    page.goto(f"{ui}/dags/{PIPELINE_DAG}/runs/{urllib.parse.quote(run_id, safe='')}")
    # a fresh browser opens a DAG on its grid; the graph is the other view of the same panel
    page.get_by_role("button", name="Show Graph").click(timeout=60_000)
    # the ingest and dbt task groups start collapsed: one node each, not their tasks
    page.get_by_test_id("expand-all-button").click(timeout=60_000)
    return page.locator(".react-flow__nodes")


def running_task(api, task_id: str, timeout: float = 1200) -> dict:
    """The task instance ``task_id`` of the running pipeline run, once it is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get(f"/api/v2/dags/{PIPELINE_DAG}/dagRuns?state=running&limit=5")["dag_runs"]
        for run in runs:
            ti = task_instances(api, PIPELINE_DAG, run["dag_run_id"]).get(task_id)
            if ti and ti["state"] == "running":
                return ti
        time.sleep(0.5)
    raise AssertionError(f"{task_id} did not start running within {timeout:.0f}s")


def follow_in_background(*args: str) -> tuple[subprocess.Popen, list[str]]:
    """``python -m orchestrators.airflow ARGS`` started, its output collected as it comes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrators.airflow", *args],
        cwd=settings.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
    return proc, output


def executor_worker(ti_id: str) -> int | None:
    """The pid of the LocalExecutor's worker running the task instance ``ti_id``: its process
    title is ``airflow worker -- LocalExecutor: <task instance id>``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if title.startswith("airflow worker -- LocalExecutor:") and ti_id in title:
            return int(entry.name)
    return None


def descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children + [d for c in children for d in descendants(c)]


def test_run_through_the_rest_api_survives_its_worker_killed_mid_load(
    deployed, api, bare_january, record_property
):
    """A run submitted through the REST API and followed; kill -9 the LocalExecutor's worker
    loading flights: the scheduler fails the try (the executor sees its worker gone, or the
    task's heartbeat stops), the retry loads again, the run succeeds and equals bare's."""
    warehouse = fresh_warehouse(NAME)
    submitted, output = follow_in_background("run", "--deployed", "--as-of", JANUARY)
    flights = running_task(api, "ingest.flights")
    worker = executor_worker(flights["id"])
    assert worker, "".join(output)
    log = (
        deployed.home() / "logs" / f"dag_id={PIPELINE_DAG}" / f"run_id={flights['dag_run_id']}"
        / "task_id=ingest.flights" / "attempt=1.log"
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        log.exists() and "startup parse complete" in log.read_text()
    ):
        time.sleep(0.1)  # the task process has parsed the DAG file: now it loads
    # mid-load: fetching pages from the source API. January's flights load in ~1.3 s, so the kill
    # comes 0.3 s in. A worker killed after its task ended would be an idle one, which may hold
    # the LocalExecutor's work-queue lock and leave every other worker waiting for it forever:
    # a missed kill point fails here instead.
    time.sleep(0.3)
    assert "[airflow] ingest as of" not in log.read_text(), "flights was loaded before the kill"
    victims = [worker, *descendants(worker)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert submitted.wait(timeout=1800) == 0, "".join(output)
    kill_to_success = time.monotonic() - killed
    record_property("kill_to_success_seconds", round(kill_to_success, 1))
    print(f"\nkill -9 of the flights worker -> run succeeded in {kill_to_success:.1f}s")
    text = "".join(output)
    assert "[airflow] ingest  flights" in text and "[airflow] dbt     fct_flights" in text
    run = last_run(api)
    assert (run["state"], run["run_type"], run["conf"]["as_of"]) == ("success", "manual", JANUARY)
    flights = task_instances(api, PIPELINE_DAG, run["dag_run_id"])["ingest.flights"]
    assert flights["try_number"] >= 2
    first = api.get(
        f"/api/v2/dags/{PIPELINE_DAG}/dagRuns/{run['dag_run_id']}/taskInstances/ingest.flights/tries/1"
    )
    assert first["state"] == "failed"
    assert_same_as_bare(warehouse, bare_january)


def test_the_ui_shows_the_rest_triggered_run_on_the_dag_graph(deployed, api, tmp_path):
    """The api-server's own UI in a real browser, logged in: the page of the run triggered
    through the REST API names it, and its graph has the ingestion and dbt tasks as nodes.
    (After the worker test: its run, submitted through the REST API, is the one shown, rather
    than a deployed run of its own, minutes on this machine.)"""
    run = rest_triggered_run(deployed, api)
    assert (run["state"], run["run_type"]) == ("success", "manual")
    # a task's log, which the task wrote into the shared log folder, through the REST API (as the
    # UI shows it) while no log server runs
    run_path = (
        f"/api/v2/dags/{PIPELINE_DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
    )
    flights = api.get(f"{run_path}/taskInstances/ingest.flights")
    log = json.dumps(
        api.get(f"{run_path}/taskInstances/ingest.flights/logs/{flights['try_number']}")
    )
    assert "[airflow] ingest as of" in log, log[:2000]
    with chromium_page() as page:
        graph = run_graph(page, deployed, run["dag_run_id"])
        missing = missing_texts(graph, NODES) + missing_texts(page, [run["dag_run_id"]])
        screenshot(page, "ui-airflow-deployed", tmp_path)
    assert missing == [], f"the Airflow UI at {page.url} does not show {missing}"


def test_clearing_a_failed_dbt_task_reruns_only_it_and_its_downstream(deployed, api, bare_january):
    """A bad value fails stg_flights' tests; once the row is fixed, clearing that one task
    (with its downstream) through the REST API finishes the run; stg_weather is not re-run."""
    import duckdb

    warehouse = settings.for_pipeline(NAME).warehouse
    with duckdb.connect(str(warehouse)) as con:  # one raw row gets an origin no airport has
        row_id, origin = con.execute("select id, origin from raw.flights limit 1").fetchone()
        con.execute("update raw.flights set origin = 'ZZZ' where id = ?", [row_id])
    api.call("PATCH", f"/api/v2/dags/{TRANSFORM_DAG}", {"is_paused": False})
    run_id = api.call(
        "POST", f"/api/v2/dags/{TRANSFORM_DAG}/dagRuns", {"logical_date": None, "conf": {}}
    )["dag_run_id"]
    run = deployed.follow(api, run_id, TRANSFORM_DAG)
    before = task_instances(api, TRANSFORM_DAG, run_id)
    assert run["state"] == "failed"
    assert before["dbt.stg_flights_model_build"]["state"] == "failed"
    assert before["dbt.fct_flights_model_build"]["state"] == "upstream_failed"
    assert before["dbt.stg_weather_model_build"]["state"] == "success"

    with duckdb.connect(str(warehouse)) as con:  # the fix upstream
        con.execute("update raw.flights set origin = ? where id = ?", [origin, row_id])
    cleared = api.call(
        "POST",
        f"/api/v2/dags/{TRANSFORM_DAG}/clearTaskInstances",
        {
            "dag_run_id": run_id,
            "task_ids": ["dbt.stg_flights_model_build"],
            "include_downstream": True,
            "include_upstream": False,
            "only_failed": False,
            "reset_dag_runs": True,
            "dry_run": False,
        },
    )
    rerun_ids = {ti["task_id"] for ti in cleared["task_instances"]}
    assert "dbt.stg_flights_model_build" in rerun_ids and "dbt.fct_flights_model_build" in rerun_ids
    assert "dbt.stg_weather_model_build" not in rerun_ids
    run = deployed.follow(api, run_id, TRANSFORM_DAG)
    after = task_instances(api, TRANSFORM_DAG, run_id)
    assert run["state"] == "success"
    for task_id, ti in after.items():
        if task_id in rerun_ids:
            assert ti["state"] == "success", task_id
        else:  # not downstream of the cleared task: left as it was, not run again
            assert (ti["state"], ti["try_number"], ti["end_date"]) == (
                before[task_id]["state"],
                before[task_id]["try_number"],
                before[task_id]["end_date"],
            ), task_id
    assert_same_as_bare(warehouse, bare_january)


def test_token_is_in_no_log_and_no_metadata_table(deployed):
    """The source API token reaches the tasks only as the connection's password."""
    import psycopg2

    token = deployed.source_api_token()
    logs = [p for p in (deployed.home() / "logs").rglob("*") if p.is_file()]
    logs += [p for p in settings.log_dir(NAME).rglob("*") if p.is_file()]
    leaked = [str(p) for p in logs if token.encode() in p.read_bytes()]
    assert leaked == []
    url = "postgresql://" + deployed.metadata_url().split("://", 1)[1]
    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute(
            "select table_name from information_schema.tables where table_schema = 'public'"
        )
        tables = [t for (t,) in cur.fetchall()]
        found = []
        for table in tables:
            cur.execute(f'select count(*) from "{table}" t where t::text like %s', [f"%{token}%"])
            if cur.fetchone()[0]:
                found.append(table)
    assert found == []
    # the connection through the APIs: refused without credentials by the REST API and by the
    # execution API (which hands connections to task processes); with the admin's login the REST
    # API does not know it (a connection from the environment is not in the metadata DB) and the
    # execution API refuses a user's token (task tokens only)
    client = deployed.api()
    anonymous = deployed.Api(client.url)
    connection = f"/connections/{SOURCE_API_CONN}"
    for who, path, codes in (
        (anonymous, "/api/v2/connections", (401, 403)),
        (anonymous, f"/api/v2{connection}", (401, 403)),
        (anonymous, f"/execution{connection}", (401, 403)),
        (client, f"/api/v2{connection}", (404,)),
        (client, f"/execution{connection}", (403,)),
    ):
        with pytest.raises(urllib.error.HTTPError) as refusal:
            who.call("GET", path)
        assert refusal.value.code in codes, (path, refusal.value.code)
        assert token not in refusal.value.read().decode()
    assert json.dumps(client.get("/api/v2/connections")).find(token) == -1


def test_backfill_survives_the_scheduler_killed_and_restarted(deployed, api, record_property):
    """Two months through the backfill API; mid-way the scheduler (with its executor workers) is
    killed -9 and started again by ``up``: both runs finish and no run history is lost."""
    history = {r["dag_run_id"] for r in api.get(f"/api/v2/dags/{PIPELINE_DAG}/dagRuns")["dag_runs"]}
    warehouse = fresh_warehouse(NAME)
    submitted, output = follow_in_background(
        "run",
        "--deployed",
        "--partition",
        "2013-01",
        "--partition",
        "2013-02",
        "--as-of",
        "2013-02-28",
    )
    killed = running_task(api, "ingest.flights")
    scheduler = deployed.topology().service("scheduler")
    os.killpg(scheduler.pid, signal.SIGKILL)  # the scheduler and every worker it forked
    killed_at = time.monotonic()
    again = airflow("up")
    assert again.returncode == 0, again.stdout + again.stderr
    restarted = time.monotonic() - killed_at
    assert deployed.topology().service("scheduler").pid != scheduler.pid
    assert submitted.wait(timeout=1200) == 0, "".join(output)
    kill_to_success = time.monotonic() - killed_at
    record_property("restart_seconds", round(restarted, 1))
    record_property("kill_to_success_seconds", round(kill_to_success, 1))
    print(
        f"\nkill -9 of the scheduler -> up again in {restarted:.1f}s, "
        f"both months succeeded {kill_to_success:.1f}s after the kill"
    )
    assert "backfill" in "".join(output)
    runs = api.get(
        f"/api/v2/dags/{PIPELINE_DAG}/dagRuns?run_type=backfill&order_by=logical_date&limit=10"
    )["dag_runs"]
    assert [(r["logical_date"][:7], r["state"]) for r in runs[-2:]] == [
        ("2013-01", "success"),
        ("2013-02", "success"),
    ]
    assert months_loaded(warehouse) == ["2013-01", "2013-02"]
    # the try the dead scheduler's worker ran was reset by the new scheduler and ran again
    rerun = task_instances(api, PIPELINE_DAG, killed["dag_run_id"])["ingest.flights"]
    assert rerun["state"] == "success" and rerun["try_number"] > killed["try_number"]
    after = {r["dag_run_id"] for r in api.get(f"/api/v2/dags/{PIPELINE_DAG}/dagRuns")["dag_runs"]}
    assert history <= after
