"""Runs on the real dev server: parity with bare, reruns, backfills, faults, failures, alerts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import duckdb
import pytest
from temporal_helpers import activity_runs, deployment
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from core import kit, settings
from core.source_service import SourceAPIConfig, api_status, running_source_api, set_clock
from lab import postgres
from lab.fingerprint import diff, fingerprint
from orchestrators.temporal import TASK_QUEUE
from orchestrators.temporal.harness.run import connect
from orchestrators.temporal.starter import (
    ensure_schedule,
    placement,
    start,
    start_watcher,
    workflow_id,
)
from orchestrators.temporal.workflows import (
    BackfillInput,
    PipelineInput,
    PipelineWorkflow,
)
from tests.conftest import bare_run
from tests.helpers import JANUARY, assert_same_as_bare, expected, quartet

WAREHOUSE_ACTIVITIES = {"ingest_resource", "build_model"}


def warehouse() -> str:
    return str(settings.for_pipeline("temporal").warehouse)


def overlapping(runs: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of activity runs whose times (started to closed, from history) overlap."""
    return [
        (a, b)
        for a, b in itertools.combinations(runs, 2)
        if a["started"] < b["closed"] and b["started"] < a["closed"]
    ]


def test_run_command_on_postgres_ingests_at_once_equals_bare_then_a_rerun_changes_nothing(
    temporal_server, source_api, bare_january, postgres_server, fresh_home, monkeypatch
) -> None:
    """The user's command with ``--warehouse``: PostgreSQL admits parallel writers, so the
    workflow starts the ingestion activities at once and the worker's warehouse slots run them
    together. January on DuckDB equals bare in the parity tier; here January on PostgreSQL."""
    url = postgres.database_url("pgtest_temporal")
    request = PipelineInput(as_of=JANUARY, partition="2013-01", policy=kit.policy())
    completed = quartet(
        "run", "temporal", "--warehouse", url, "--as-of", JANUARY, "--partition", "2013-01",
        env={"TEMPORAL_ADDRESS": temporal_server.address},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    assert diff(bare_january, fingerprint(url)) == []
    # one line per unit (ingestion resource, dbt model), then where the full log is
    units = [
        line
        for line in completed.stdout.splitlines()
        if line.startswith(("[temporal] ingest ", "[temporal] dbt "))
    ]
    assert len(units) == expected().units, completed.stdout
    assert "logs/run.log" in completed.stdout

    # the rerun is the monthly Schedule's action, fired now, on this process's worker
    monkeypatch.setenv(settings.WAREHOUSE_URL_ENV, url)

    async def rerun():
        async with deployment(temporal_server, source_api.url, source_api.token) as client:
            first = client.get_workflow_handle(workflow_id(request))
            history = (await first.fetch_history()).to_json()
            runs = await activity_runs(first)
            # the starter's decision: parallel on PostgreSQL
            rerun_input = PipelineInput(as_of=JANUARY, partition="2013-01", **placement())
            schedule = await ensure_schedule(client, rerun_input, "test-monthly")
            await schedule.trigger()
            while not (await schedule.describe()).info.recent_actions:
                await asyncio.sleep(0.2)
            action = (await schedule.describe()).info.recent_actions[-1].action
            scheduled = client.get_workflow_handle_for(PipelineWorkflow.run, action.workflow_id)
            result = await scheduled.result()
            await schedule.delete()
            return history, runs, result

    try:
        history, runs, result = asyncio.run(rerun())
    finally:
        os.environ.update(settings.dbt_target_env(None))  # the worker's dbt exports: back to DuckDB
    assert source_api.token not in history  # the token is worker configuration only
    # what the workflow scheduled: one activity per resource and one per dbt model
    ingestions = [r for r in runs if r["type"] == "ingest_resource"]
    assert len(ingestions) == len(expected().resources)
    assert [r["type"] for r in runs].count("build_model") == len(expected().models)
    # the server's own record: at least two ingestion units ran at the same time
    together = overlapping(ingestions)
    assert together, "no two ingestion activities overlapped on PostgreSQL"
    span = max(r["closed"] for r in ingestions) - min(r["started"] for r in ingestions)
    busy = sum((r["closed"] - r["started"]).total_seconds() for r in ingestions)
    print(
        f"ingestion on PostgreSQL: {busy:.1f}s of activity time in {span.total_seconds():.1f}s; "
        f"{len(together)} overlapping pairs"
    )
    # the rerun changed nothing
    assert diff(bare_january, fingerprint(url)) == []
    assert [i.new_rows for i in result.ingested] == [0] * len(expected().resources)


def test_backfill_in_shuffled_order_equals_bare_in_order(
    temporal_server, source_api, fresh_home
) -> None:
    months = ["2013-01", "2013-02"]
    in_order = fingerprint(bare_run("bare_months", partitions=months))

    async def backfill():
        async with deployment(temporal_server, source_api.url, source_api.token) as client:
            handle = await start(client, BackfillInput(["2013-02", "2013-01"], **placement()))
            return await handle.result()

    results = asyncio.run(backfill())
    assert [r.partition for r in results] == ["2013-02", "2013-01"]  # child per month
    assert diff(in_order, fingerprint(warehouse())) == []


def test_injected_api_faults_are_retried_to_the_same_warehouse(
    temporal_server, bare_january, fresh_home, monkeypatch
) -> None:
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)
    faulty = SourceAPIConfig(fault_rate=0.2, fault_seed=7)
    with running_source_api(faulty) as (url, token):

        async def main():
            async with deployment(temporal_server, url, token) as client:
                handle = await start(client, PipelineInput(as_of=JANUARY, **placement()))
                return await handle.result(), await activity_runs(handle)

        result, runs = asyncio.run(main())
    assert {i.resource for i in result.ingested} == set(expected().resources)
    assert diff(bare_january, fingerprint(warehouse())) == []
    # DuckDB admits one writer: the workflow started its units one after another
    writers = [r for r in runs if r["type"] in WAREHOUSE_ACTIVITIES]
    assert len(writers) >= expected().units  # retried attempts too
    assert overlapping(writers) == [], "two warehouse activities ran at the same time on DuckDB"


def test_failing_dbt_test_fails_the_run_blocks_downstream_and_alerts(
    temporal_server, fresh_home, alert_receiver, monkeypatch
) -> None:
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)
    broken = SourceAPIConfig(malformed=("flights:bad_value:2013-01-15",))
    with running_source_api(broken) as (url, token):

        async def main():
            async with deployment(
                temporal_server, url, token, ui_url="http://127.0.0.1:8233"
            ) as client:
                handle = await client.start_workflow(
                    PipelineWorkflow.run,
                    PipelineInput(as_of=JANUARY, **placement()),
                    id="failing-dbt-test",
                    task_queue=TASK_QUEUE,
                )
                with pytest.raises(WorkflowFailureError) as failure:
                    await handle.result()
                return failure.value, await activity_runs(handle), handle.result_run_id

        error, runs, run_id = asyncio.run(main())
    message = str(error.cause)
    assert "accepted_values_stg_flights_origin" in message
    assert "skipped downstream" in message and "fct_flights" in message
    built = {
        r["input"].split('"model":"')[1].split('"')[0]: r
        for r in runs
        if r["type"] == "build_model"
    }
    assert built["stg_flights"]["outcome"] == "failed" and built["stg_flights"]["attempt"] == 1
    assert built["dim_carriers"]["outcome"] == "completed"  # not downstream: still built
    for blocked in (
        "int_flights_enriched",
        "fct_flights",
        "carrier_month_performance",
        "route_stats",
    ):
        assert blocked not in built
    with duckdb.connect(warehouse(), read_only=True) as con:
        marts = {
            t
            for (t,) in con.execute(
                "select table_name from information_schema.tables where table_schema = 'marts'"
            ).fetchall()
        }
    assert "fct_flights" not in marts and "dim_carriers" in marts

    (payload,) = alert_receiver.wait(1)
    assert payload["orchestrator"] == "temporal" and payload["status"] == "failed"
    assert payload["run_id"] == f"failing-dbt-test/{run_id}"
    assert "accepted_values_stg_flights_origin" in payload["error"]
    assert payload["url"].endswith(f"/workflows/failing-dbt-test/{run_id}/history")
    assert token not in str(payload)


def test_source_watcher_starts_a_run_when_the_api_clock_advances(
    temporal_server, fresh_home, monkeypatch
) -> None:
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)
    with running_source_api(SourceAPIConfig(as_of=JANUARY)) as (url, token):

        async def main():
            async with deployment(temporal_server, url, token) as client:
                baseline = api_status(url, token)["as_of"]
                watcher = await start_watcher(
                    client, last_as_of=baseline, policy=replace(kit.policy(), source_poll_seconds=1)
                )
                try:
                    await asyncio.sleep(3)  # a few polls: the clock has not moved, nothing runs
                    set_clock(url, token, "2013-02-28")
                    child = client.get_workflow_handle_for(
                        PipelineWorkflow.run, f"{watcher.id}/as-of-2013-02-28"
                    )
                    deadline = time.monotonic() + 300
                    while True:
                        try:
                            return await child.result()
                        except Exception:
                            if time.monotonic() > deadline:
                                raise
                            await asyncio.sleep(1)
                finally:
                    await watcher.terminate("test over")

        result = asyncio.run(main())
    assert {i.resource for i in result.ingested} >= {"flights"}
    with duckdb.connect(warehouse(), read_only=True) as con:
        last_day = con.execute("select max(flight_date) from marts.fct_flights").fetchone()[0]
    assert str(last_day) == "2013-02-28"


def test_killed_while_loading_flights_then_warehouse_deleted_rerun_equals_bare(
    temporal_server, source_api, bare_january, fresh_home
) -> None:
    """kill -9 of `quartet run temporal` mid-flights; the user deletes the warehouse to start
    over (dlt's working folder stays as the killed run left it); the rerun is bare's warehouse."""
    command = [sys.executable, "-m", "orchestrators.temporal", "run", "--as-of", JANUARY]
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal_server.address}
    first = subprocess.Popen(
        command,
        env=env,
        cwd=settings.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    async def loading_flights() -> None:
        client = await connect(temporal_server.address)
        handle = client.get_workflow_handle(
            workflow_id(PipelineInput(as_of=JANUARY, policy=kit.policy()))
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            with contextlib.suppress(RPCError):
                for pending in (await handle.describe()).raw_description.pending_activities:
                    details = pending.heartbeat_details.payloads
                    if details and b"loading flights" in details[0].data:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError("the flights activity was never seen running")

    try:
        asyncio.run(loading_flights())
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    path = settings.for_pipeline("temporal").warehouse
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    rerun = subprocess.run(
        command, env=env, cwd=settings.REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert_same_as_bare(path, bare_january)
    flights = next(line for line in rerun.stdout.splitlines() if "ingest  flights" in line)
    assert "+0 rows" not in flights, flights
