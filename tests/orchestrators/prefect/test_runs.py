"""Runs of the flows: parity with bare on PostgreSQL with the ingestion units at once,
idempotency, backfills, faults, failures, alerts, writers, and a run killed with SIGKILL.

The entry point runs in a child process on Prefect's ephemeral API (what a user runs); the other
runs call the flows in this process against prefect_test_harness's server. The parity tier
proves January equals bare on DuckDB for every orchestrator: here January and its rerun run on
PostgreSQL, where the ingestion units run at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import settings
from core.lineage import canonical
from lab import postgres
from lab.fingerprint import fingerprint
from orchestrators.prefect import NAME, WAREHOUSE_LIMIT
from tests.helpers import (
    JANUARY,
    assert_same_as_bare,
    expected,
    fresh_warehouse,
    own_source_api,
    quartet,
    table_rows,
)

assert_same = assert_same_as_bare


def dev_env() -> dict:
    """The environment of a user's run: Prefect's ephemeral API, not the session's harness."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def task_runs(flow_run_id) -> list:
    """The task runs of a pipeline run's subflow runs, as the current Prefect API records them."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,  # the API answers 422 without sort and limit
            limit=100,
        )
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [c.id for c in children]}),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return runs


def task_run_names(flow_run_id) -> set[str]:
    """Names of the completed task runs of a pipeline run's subflow runs."""
    return {r.name for r in task_runs(flow_run_id) if r.state and r.state.is_completed()}


def overlapping(runs) -> list[tuple[str, str]]:
    """Pairs of task runs that ran at the same time, by the start and end Prefect recorded."""
    return [
        (a.name, b.name)
        for a, b in itertools.combinations(runs, 2)
        if a.start_time < b.end_time and b.start_time < a.end_time
    ]


@contextlib.contextmanager
def dev_runs_api():
    """A Prefect API on the dev runs' own database (the SQLite file the ephemeral server of
    ``quartet run prefect`` keeps in PREFECT_HOME), as the current API for this block."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    from core.net import free_port

    database = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    with temporary_settings(
        {PREFECT_SERVER_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{database}"}
    ):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=180)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        server.stop()


@contextlib.contextmanager
def warehouse_url(url: str):
    """QUARTET_WAREHOUSE_URL for this block (DuckDB again after it)."""
    os.environ[settings.WAREHOUSE_URL_ENV] = url
    try:
        yield
    finally:
        os.environ.pop(settings.WAREHOUSE_URL_ENV, None)
        os.environ.update(settings.dbt_target_env(None))


@pytest.fixture(scope="module")
def january_run(source_api, quartet_home, postgres_server):
    """``quartet run prefect --warehouse <url> --as-of 2013-01-31 --partition 2013-01`` on the
    ephemeral API, into a PostgreSQL database of its own (not warehouse_*: `quartet compare`
    would list it); returns the URL and the run's output."""
    url = postgres.database_url("pgtest_prefect")
    proc = quartet(
        "run", NAME, "--warehouse", url, "--as-of", JANUARY, "--partition", "2013-01",
        env=dev_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return url, proc.stdout


def test_run_on_postgres_matches_bare_with_the_units_at_once(january_run, bare_january) -> None:
    url, output = january_run
    assert_same(url, bare_january)
    assert postgres.mask(url) in output and "***" in output  # never the password
    # one progress line per unit, and where Prefect's own log is
    for resource in expected().resources:
        assert f"[prefect] ingest  {resource} 2013-01" in output
    for model in expected().models:
        assert f"[prefect] dbt     {model} " in output
    assert "the orchestrator's log: " in output

    # the units ran at once, as the dev run's own Prefect records them: its limit admits all of
    # them, and their task runs overlap in time
    (run_id,) = re.findall(r"run ([0-9a-f-]{36}) succeeded", output)
    with dev_runs_api():
        from prefect import get_client

        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(WAREHOUSE_LIMIT)
        ingestion = [r for r in task_runs(run_id) if r.name.startswith("ingest ")]
    assert limit.limit == len(expected().resources)
    assert sorted(r.name for r in ingestion) == sorted(f"ingest {r}" for r in expected().resources)
    assert all(r.state.is_completed() for r in ingestion)
    assert overlapping(ingestion), [(r.name, r.start_time, r.end_time) for r in ingestion]


def test_rerun_on_postgres_changes_nothing(
    january_run, bare_january, source_api, prefect_api
) -> None:
    from orchestrators.prefect.deployments import provision
    from orchestrators.prefect.flows import pipeline

    url, _output = january_run
    try:
        with warehouse_url(url):
            provision(source_api.token)  # the limit sized for PostgreSQL
            state = pipeline(as_of=JANUARY, partitions=["2013-01"], return_state=True)
    finally:
        provision(source_api.token)  # DuckDB's one slot again, for the tests after this one
    summary = state.result()
    assert {
        r: counts["new"] for r, counts in summary["ingested"]["2013-01"].items()
    } == dict.fromkeys(expected().resources, 0)
    assert_same(url, bare_january)
    # one task run per resource and per dbt node (models, data tests, unit tests)
    graph = canonical()
    names = task_run_names(state.state_details.flow_run_id)
    assert {
        f"ingest {t.removeprefix('raw.')}" for t in graph.nodes if t.startswith("raw.")
    } <= names
    assert {f"model {m}" for m, layer in graph.nodes.items() if layer != "raw"} <= names
    tests = {t for node_tests in graph.tests.values() for t in node_tests}
    assert len([n for n in names if n.startswith(("test ", "unit_test "))]) == expected().tests
    assert len(tests) == expected().tests


def test_backfill_shuffled_through_api_faults_equals_in_order(
    prefect_api, fresh_warehouse, reset_warehouse, monkeypatch
) -> None:
    """Months in order from a clean API == the same months shuffled from an API where 20% of
    requests fail (500/503/429/dropped/slow): retries make the faults invisible, and the raw
    layer does not depend on the order months arrive in."""
    from orchestrators.prefect.flows import pipeline

    months = ["2013-01", "2013-02"]
    pipeline(partitions=months)
    in_order = fingerprint(fresh_warehouse)
    assert in_order.tables["marts.fct_flights"].rows > 0

    reset_warehouse()
    with own_source_api(fault_rate=0.2, fault_seed=7):
        summary = pipeline(partitions=months[::-1])
    assert list(summary["ingested"]) == months[::-1]  # one ingestion subflow per month, in order
    assert_same(fresh_warehouse, in_order)


def test_failing_dbt_test_fails_the_run_blocks_marts_and_alerts(
    prefect_api, fresh_warehouse, alert_receiver, monkeypatch
) -> None:
    from orchestrators.prefect.flows import pipeline

    with own_source_api(malformed=("flights:bad_value:2013-01-15",)) as (_url, token):
        state = pipeline(as_of=JANUARY, return_state=True)

    assert state.is_failed()
    assert "accepted_values_stg_flights_origin" in state.message
    names = task_run_names(state.state_details.flow_run_id)
    assert "model stg_flights" in names
    assert not {"model fct_flights", "model route_stats", "model carrier_month_performance"} & names
    rows = table_rows(
        fresh_warehouse, "select table_schema, table_name from information_schema.tables"
    )
    tables = {f"{schema}.{table}" for schema, table in rows}
    assert "staging.stg_flights" in tables
    assert not {"marts.fct_flights", "marts.route_stats"} & tables

    (alert,) = alert_receiver.wait(1)  # the failed subflow does not alert twice
    assert alert["orchestrator"] == "prefect"
    assert alert["pipeline"] == "quartet-pipeline"
    assert alert["run_id"] == str(state.state_details.flow_run_id)
    assert "accepted_values_stg_flights_origin" in alert["error"]
    assert token not in str(alert)


def test_second_writer_fails_clearly(prefect_api, monkeypatch) -> None:
    from prefect.concurrency.sync import concurrency

    from orchestrators.prefect import WAREHOUSE_LIMIT
    from orchestrators.prefect.flows import transformation

    monkeypatch.setenv("QUARTET_LOCK_TIMEOUT", "2")
    with concurrency(WAREHOUSE_LIMIT, occupy=1):  # another writer holds the warehouse
        state = transformation(return_state=True)
    assert state.is_failed()
    assert "TimeoutError" in state.message and "concurrency" in state.message.lower()


def test_run_killed_mid_ingestion_next_run_succeeds_at_once(source_api, bare_january) -> None:
    """kill -9 of a run (its whole process group: the run, its ephemeral Prefect server, its
    source API) while it holds the warehouse slot: the next run frees the dead run's slot, says
    so, and builds bare's warehouse instead of waiting for the slot until it gives up."""
    warehouse = fresh_warehouse(NAME)
    lock_file = warehouse.with_name(warehouse.name + ".lock")
    env = {**dev_env(), "QUARTET_LOCK_TIMEOUT": "600"}  # a wait for the slot would hang the test
    killed = subprocess.Popen(
        [sys.executable, "-m", "orchestrators.prefect", "run", "--as-of", JANUARY],
        env=env, cwd=settings.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while "prefect ingest" not in (lock_file.read_text() if lock_file.exists() else ""):
            assert killed.poll() is None, killed.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the run never started ingesting"
            time.sleep(0.2)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        killed.stdout.close()

    rerun = quartet("run", NAME, "--as-of", JANUARY, env=env, timeout=1500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "released 1 warehouse slot(s)" in rerun.stdout
    assert_same(warehouse, bare_january)
