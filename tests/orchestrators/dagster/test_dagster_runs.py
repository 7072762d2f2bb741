"""Runs of the full_pipeline job (in process, on the persistent dev-mode instance) against the
warehouse. One month (as of 2013-01-31, or two for the backfill) keeps them short; the full year
is the parity suite's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from core import settings
from lab.fingerprint import diff, fingerprint
from tests.helpers import (
    JANUARY,
    assert_same_as_bare,
    expected,
    fresh_warehouse,
    months_loaded,
    own_source_api,
    quartet,
    table_rows,
)

FAILING_TEST = "accepted_values_stg_flights_origin__EWR__JFK__LGA"


def _materialized(result) -> set[str]:
    return {
        event.asset_key.to_user_string()
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }


def _step_spans(instance, run_id: str, prefix: str) -> dict[str, tuple[float, float]]:
    """Start and end of each step named ``prefix...``, as the run's event log records them."""
    starts, ends = {}, {}
    for record in instance.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or not (event.step_key or "").startswith(prefix):
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            ends[event.step_key] = entry.timestamp
    return {step: (starts[step], ends[step]) for step in starts if step in ends}


def test_january_on_postgres_equals_bare_with_the_ingestion_units_at_once(
    dagster_project, instance, postgres_server, bare_january, source_api
):
    """`quartet run dagster --warehouse <PostgreSQL>`: the warehouse pool admits every ingestion
    unit and the multiprocess executor runs them at once; January equals bare's DuckDB January
    and a rerun changes nothing. (January on DuckDB is the parity tier's.)"""
    from lab import postgres

    url = postgres.database_url("pgtest_dagster")
    env = {"SOURCE_API_URL": source_api.url, "SOURCE_API_TOKEN": source_api.token}
    january = ("run", "dagster", "--warehouse", url, "--as-of", JANUARY, "--partition", "2013-01")
    done = quartet(*january, env=env, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = re.search(r"run (\S+) \(partition 2013-01\) succeeded", done.stdout).group(1)
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

    # Dagster's event log: every raw table and dbt model materialized, each dbt test passed
    events = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(run_id).records]
    events = [event for event in events if event is not None]
    want = expected()
    materialized = {
        tuple(event.asset_key.path)
        for event in events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    assert {("raw", r) for r in want.resources} <= materialized
    assert set(want.models) <= {path[-1] for path in materialized}
    checks = [
        event.event_specific_data
        for event in events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert checks and all(check.passed for check in checks)

    # the ingestion units overlapped: some two of them ran at the same time
    spans = _step_spans(instance, run_id, "ingest_")
    assert set(spans) == {f"ingest_{r}" for r in want.resources}
    overlapping = [
        (a, b)
        for a, (a_start, a_end) in spans.items()
        for b, (b_start, b_end) in spans.items()
        if a < b and a_start < b_end and b_start < a_end
    ]
    assert overlapping, f"the ingestion steps ran one after another: {spans}"
    assert_same_as_bare(url, bare_january)

    # the token never reaches the event log or the run's config
    stored = instance.get_run_by_id(run_id)
    logged = "\n".join(str(entry) for entry in instance.all_logs(run_id))
    assert source_api.token not in logged
    assert source_api.token not in str(stored.run_config)

    first = fingerprint(url)
    rerun = quartet(*january, env=env, timeout=1500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert diff(first, fingerprint(url)) == []


def test_quartet_run_with_a_partition_loads_that_month_and_prints_a_line_per_unit(
    dagster_project, source_api
):
    warehouse = fresh_warehouse("dagster")
    done = quartet(
        "run",
        "dagster",
        "--partition",
        "2013-02",
        "--as-of",
        "2013-02-28",
        env={"SOURCE_API_URL": source_api.url, "SOURCE_API_TOKEN": source_api.token},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # what February published: February's flights (and late publications of January's last
    # ones), nothing published outside the month: not the twelve months a whole-range load brings
    assert months_loaded(warehouse)[-1] == "2013-02"
    ((first, last),) = table_rows(
        warehouse, "select min(updated_at)::varchar, max(updated_at)::varchar from raw.flights"
    )
    assert first >= "2013-02-01" and last < "2013-03-01"
    want = expected()
    lines = done.stdout.splitlines()
    ingested = [line for line in lines if line.startswith("[dagster] ingest ")]
    built = [line for line in lines if line.startswith("[dagster] dbt ")]
    assert sorted(line.split()[2] for line in ingested) == sorted(want.resources)
    assert sorted(line.split()[2] for line in built) == sorted(want.models)
    assert "DEBUG" not in done.stdout + done.stderr
    # a model's line counts the tests core.lineage attaches to it: data tests (Dagster's asset
    # checks) and unit tests (which dagster-dbt turns into no event), all passed
    from core import lineage

    tests = lineage.canonical().tests
    for line in built:
        model = line.split()[2]
        assert line.endswith(f" {len(tests[model])} tests passed"), line
    # a header, a line per unit, a result line: dbt's own log went to the log file, uncoloured
    assert len(lines) <= want.units + 4, lines
    assert "\x1b[" not in done.stdout + done.stderr
    log = Path(re.search(r"(?m)succeeded in .* Dagster's log: (\S+)$", done.stdout).group(1))
    logged = log.read_text()
    dbt_log = re.compile(r"\d+ of \d+ START")  # dbt's own line per node
    assert not dbt_log.search(done.stdout) and dbt_log.search(logged) and "\x1b[" not in logged
    # the dev-mode instance (what `quartet ui dagster` shows) holds the run, every asset
    # materialized for the month; its SQLite files, written without an fsync per event
    # (levers.sqlite_without_fsync), are whole and checkpointed once the run is over
    run_id = re.search(r"run (\S+) \(partition 2013-02\) succeeded", done.stdout).group(1)
    run, defs, _ = dagster_project
    with dg.DagsterInstance.from_config(str(run.dagster_home())) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        materialized = {
            (r.event_log_entry.asset_materialization.asset_key, r.partition_key) for r in records
        }
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert materialized == {(key, "2013-02") for key in keys}
    for db in (run.dagster_home() / "history").rglob("*.db"):
        with contextlib.closing(sqlite3.connect(db)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",), db
        assert not db.with_name(f"{db.name}-wal").exists(), db


def test_months_backfilled_in_shuffled_order_equal_bare_in_order(dagster_project, bare_in_order):
    run, _, _ = dagster_project
    months, as_of = ["2013-01", "2013-02"], "2013-02-28"
    bare = bare_in_order(months, as_of)
    warehouse = fresh_warehouse("dagster")
    for month in reversed(months):  # what a multi-run backfill does: one run per month
        result = run.execute(as_of=as_of, partition=month)
        assert result.success, run.failure_summary(result.all_events)
        assert result.dagster_run.tags["dagster/partition"] == month
    assert_same_as_bare(warehouse, bare)


def test_twenty_percent_api_faults_still_give_the_bare_warehouse(dagster_project, bare_january):
    run, _, _ = dagster_project
    with own_source_api(fault_rate=0.2, fault_seed=7):
        warehouse = fresh_warehouse("dagster")
        result = run.execute(as_of=JANUARY)
    assert result.success, run.failure_summary(result.all_events)
    assert_same_as_bare(warehouse, bare_january)


def test_a_run_killed_mid_ingestion_does_not_block_the_next_one(
    dagster_project, instance, bare_january, source_api
):
    """kill -9 leaves the run STARTED and the warehouse pool's only slot taken; the next run
    marks it failed, frees the slot, says so, and builds bare's warehouse."""
    run, _, project = dagster_project
    fresh_warehouse("dagster")
    victim = subprocess.Popen(
        [sys.executable, "-m", "orchestrators.dagster", "run", "--as-of", JANUARY],
        cwd=settings.REPO_ROOT,
        env={**os.environ, "SOURCE_API_URL": source_api.url, "SOURCE_API_TOKEN": source_api.token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    storage = instance.event_log_storage
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and victim.poll() is None:
            slots = storage.get_concurrency_info(project.WAREHOUSE_POOL).claimed_slots
            if any(slot.step_key.startswith("ingest_") for slot in slots):
                break
            time.sleep(0.1)
        assert victim.poll() is None, "the run ended before it could be killed"
        os.killpg(victim.pid, signal.SIGKILL)
    finally:
        victim.wait()
    (held,) = storage.get_concurrency_info(project.WAREHOUSE_POOL).claimed_slots
    assert instance.get_run_by_id(held.run_id).status == dg.DagsterRunStatus.STARTED

    said: list[str] = []
    result = run.execute(as_of=JANUARY, say=said.append)
    assert result.success, run.failure_summary(result.all_events)
    assert any(held.run_id in line and "marked it failed" in line for line in said), said
    assert instance.get_run_by_id(held.run_id).status == dg.DagsterRunStatus.FAILURE
    assert_same_as_bare(settings.for_pipeline("dagster").warehouse, bare_january)


def test_a_failing_dbt_test_fails_the_run_blocks_the_marts_and_alerts(
    dagster_project, alert_receiver
):
    run, _, _ = dagster_project
    with own_source_api(malformed=("flights:bad_value:2013-01-15",)) as (_url, token):
        fresh_warehouse("dagster")
        result = run.execute(as_of=JANUARY)
    assert not result.success
    failed_checks = [
        event.asset_check_evaluation_data.check_name
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and not event.asset_check_evaluation_data.passed
    ]
    assert failed_checks == [FAILING_TEST]
    materialized = _materialized(result)
    assert "staging/stg_flights" in materialized  # built, then its test failed
    assert "marts/dim_airports" in materialized  # not downstream of stg_flights
    blocked = {"intermediate/int_flights_enriched", "marts/fct_flights", "marts/route_stats"}
    assert not blocked & materialized
    summary = run.failure_summary(result.all_events)
    assert FAILING_TEST in summary and "fct_flights" in summary  # names test and skipped marts

    (payload,) = alert_receiver.wait(1)
    assert payload["orchestrator"] == "dagster"
    assert payload["pipeline"] == "full_pipeline"
    assert payload["run_id"] == result.run_id
    assert payload["status"] == "failed"
    assert FAILING_TEST in payload["error"]
    assert payload["url"].endswith(f"/runs/{result.run_id}")
    assert token not in str(payload) and settings.DEV_API_TOKEN not in str(payload)
