"""In-process runs (``dag.test()``, as Cosmos tests its example DAGs) held against the bare run.

January equal to bare and a rerun changing nothing are proven on DuckDB for every orchestrator
by the parity tier; here they run on a PostgreSQL warehouse (``--warehouse``), the scale path beside DuckDB.
"""

from __future__ import annotations

import contextlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import pipeline, settings, warehouse
from lab.fingerprint import diff, fingerprint
from orchestrators.airflow import NAME, PIPELINE_DAG, WAREHOUSE_POOL
from orchestrators.airflow.harness import environment
from orchestrators.airflow.harness.run import (
    failures,
    followed_run,
    load_dag,
    run_once,
    unit_lines,
    unit_of,
)
from tests.helpers import JANUARY, assert_same_as_bare, months_loaded
from tests.helpers import fresh_warehouse as wipe_warehouse


@pytest.fixture
def fresh_warehouse() -> Path:
    return wipe_warehouse(NAME)


def assert_same(expected, path) -> None:
    assert_same_as_bare(path, expected)


def task_instance(dag_run, task_id: str):
    return next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@contextlib.contextmanager
def warehouse_at(url: str):
    """This process's runs load ``url``, set up as ``quartet run airflow --warehouse URL`` does
    (the writer pool sized for it); the DuckDB warehouse is configured again afterwards. A DAG
    to run on it is parsed inside (Cosmos fixes the dbt target when the DAG file is parsed)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(settings.WAREHOUSE_URL_ENV, url)
        environment.migrate_dev()
        try:
            yield
        finally:
            patch.undo()
            environment.migrate_dev()


@pytest.fixture(scope="module")
def january_on_postgres(postgres_server, bare_january, source_api):
    """One January run (partition 2013-01) through Airflow into a PostgreSQL warehouse of its
    own; also what the writer pool and the DuckDB file looked like meanwhile."""
    from airflow.models.pool import Pool

    from lab import postgres

    environment.source_api_connection(source_api.url, source_api.token)
    url = postgres.database_url("pgtest_airflow")
    duckdb_file = settings.for_pipeline(NAME).warehouse
    duckdb_before = warehouse.table_counts(duckdb_file, (settings.RAW_SCHEMA,))
    with warehouse_at(url):
        slots = Pool.get_pool(WAREHOUSE_POOL).slots
        dag_run = run_once(load_dag(), as_of=JANUARY, partition="2013-01")
    untouched = warehouse.table_counts(duckdb_file, (settings.RAW_SCHEMA,)) == duckdb_before
    return url, dag_run, slots, untouched


def test_january_on_postgres_matches_bare(january_on_postgres, bare_january):
    from core.ingestion import load_config

    url, dag_run, slots, duckdb_untouched = january_on_postgres
    assert dag_run.state == "success", failures(dag_run)
    assert set(states(dag_run).values()) == {"success"}
    assert {unit for kind, unit in map(unit_of, states(dag_run)) if kind == "ingest"} == set(
        load_config().resources
    )
    # Airflow's own record of the concurrency setting: every ingestion unit fits the pool at once
    # (dag.test() itself runs tasks one after another; the scheduler honours the pool)
    assert slots == len(load_config().resources)
    assert duckdb_untouched, "the run loaded the DuckDB file instead of the configured warehouse"
    assert_same(bare_january, url)


def test_rerun_on_postgres_changes_nothing(january_on_postgres, bare_january):
    url, *_ = january_on_postgres
    before = fingerprint(url)
    with warehouse_at(url):
        dag_run = run_once(load_dag(), as_of=JANUARY, partition="2013-01")
    assert dag_run.state == "success", failures(dag_run)
    assert diff(before, fingerprint(url)) == []
    assert_same(bare_january, url)


def test_event_trigger_starts_a_run_when_the_source_has_new_data(dag_bag, source_api, connect):
    """The watch DAG's sensor polls the project's freshness probe (the API's clock): a
    publication past the one the last triggered run was started for (none yet) triggers the
    pipeline, asking the source for that day."""
    from airflow.models.dagrun import DagRun

    from core.source_service import api_status, set_clock
    from orchestrators.airflow import WATCH_DAG

    connect(source_api.url, source_api.token)
    previous = api_status(source_api.url, source_api.token)["as_of"][:10]
    try:
        set_clock(source_api.url, source_api.token, "2013-02-28")  # new data is published
        watch = dag_bag.get_dag(WATCH_DAG).test(logical_date=None)
        assert watch.state == "success", failures(watch)
        triggered = DagRun.find(dag_id=PIPELINE_DAG, run_type="operator_triggered")
        assert [r.conf for r in triggered] == [{"as_of": "2013-02-28"}]
    finally:
        set_clock(source_api.url, source_api.token, previous)


def test_months_backfilled_in_shuffled_order_match_in_order(
    pipeline_dag, source_api, fresh_warehouse, connect, tmp_path
):
    as_of = "2013-02-28"
    months = ["2013-01", "2013-02"]
    pipeline.run("bare_months", as_of=as_of, partitions=months, log=lambda _: None)
    expected = fingerprint(settings.for_pipeline("bare_months").warehouse)
    connect(source_api.url, source_api.token)
    log = tmp_path / "run.log"
    with open(log, "a") as out:  # as `quartet run airflow --partition A --partition B` runs them
        for partition in ("2013-02", "2013-01"):
            dag_run = followed_run(
                pipeline_dag, fresh_warehouse, log, out, as_of=as_of, partition=partition
            )
            assert dag_run.conf["partition"] == partition
            # a partition is a month of publications (February's includes late corrections of
            # January's last flights), so February is there from the first run on
            assert "2013-02" in months_loaded(fresh_warehouse)
    assert months_loaded(fresh_warehouse) == months
    assert_same(expected, fresh_warehouse)


def test_injected_api_faults_are_retried(pipeline_dag, bare_january, own_api, fresh_warehouse):
    own_api(fault_rate=0.2, fault_seed=7)
    dag_run = run_once(pipeline_dag, as_of=JANUARY)
    assert dag_run.state == "success", failures(dag_run)
    assert_same(bare_january, fresh_warehouse)


class Terminal(io.StringIO):
    """What ``quartet run airflow`` prints, each line with the moment it was printed."""

    def __init__(self) -> None:
        super().__init__()
        self.printed: dict[str, datetime] = {}

    def write(self, text: str) -> int:
        if match := re.match(r"^\[airflow\] \w+\s+(\w+)", text):
            self.printed[match.group(1)] = datetime.now(UTC)
        return super().write(text)


def test_failing_dbt_test_fails_the_run_blocks_marts_and_alerts(
    pipeline_dag, own_api, fresh_warehouse, alert_receiver
):
    _, token = own_api(malformed=("flights:bad_value:2013-01-15",))
    terminal = Terminal()
    with (
        contextlib.redirect_stdout(terminal),
        unit_lines(PIPELINE_DAG, settings.for_pipeline(NAME).location) as lines,
    ):
        dag_run = run_once(pipeline_dag, as_of=JANUARY)
        lines.not_run(dag_run)
    assert dag_run.state == "failed"
    state = states(dag_run)
    # the terminal's lines: each task's as it finished (flights' before the first dbt model
    # started), then the tasks that never ran
    printed = terminal.getvalue()
    assert re.search(r"ingest\s+flights\s+[\d.]+s\s+\+[\d,]+ rows", printed), printed
    assert re.search(r"dbt\s+stg_flights\s+[\d.]+s\s+FAILED", printed), printed
    assert re.search(r"dbt\s+fct_flights\s+0.0s\s+UPSTREAM_FAILED", printed), printed
    started = task_instance(dag_run, "dbt.stg_flights_model_build").start_date
    assert terminal.printed["flights"] < started < terminal.printed["stg_flights"]
    assert terminal.printed["stg_flights"] <= dag_run.end_date
    assert state["dbt.stg_flights_model_build"] == "failed"
    for blocked in ("int_flights_enriched", "fct_flights", "carrier_month_performance"):
        assert state[f"dbt.{blocked}_model_build"] == "upstream_failed", blocked
    assert state["dbt.stg_weather_model_build"] == "success"  # not downstream: built
    [alert] = alert_receiver.wait(1)
    assert alert["orchestrator"] == "airflow" and alert["pipeline"] == PIPELINE_DAG
    assert alert["run_id"] == dag_run.run_id and alert["status"] == "failed"
    assert "stg_flights" in alert["error"] and "accepted_values" in alert["error"]
    assert token not in str(alert) and settings.DEV_API_TOKEN not in str(alert)


def test_wrong_token_fails_at_once_without_retries(
    pipeline_dag, source_api, connect, fresh_warehouse
):
    """A token the API refuses fails the same way every time: the task is not retried."""
    connect(source_api.url, "not-the-token")
    dag_run = run_once(pipeline_dag, as_of=JANUARY)
    assert dag_run.state == "failed"
    failed = [ti for ti in dag_run.get_task_instances() if ti.state == "failed"]
    assert failed and all(ti.task_id.startswith("ingest.") for ti in failed)
    assert {ti.try_number for ti in failed} == {1}  # no retry happened
    assert pipeline_dag.get_task("ingest.flights").retries > 0  # (retries exist: not used here)
    # what the run command prints: each failed task with its culprit, not only its state
    reported = failures(dag_run)
    assert len(reported) == len(failed) + 1, reported  # + "N downstream tasks not run"
    for ti, line in zip(sorted(failed, key=lambda t: t.task_id), reported, strict=False):
        assert line.startswith(f"{ti.task_id} failed") and "check SOURCE_API_TOKEN" in line, line
    assert reported[-1].endswith("downstream tasks not run")
    assert "not-the-token" not in " ".join(reported)


def test_after_a_malformed_record_the_next_good_run_succeeds(
    pipeline_dag, own_api, connect, source_api, fresh_warehouse, bare_january
):
    own_api(malformed=("flights:missing_key:2013-01-15",))
    dag_run = run_once(pipeline_dag, as_of=JANUARY)
    assert dag_run.state == "failed"
    flights = task_instance(dag_run, "ingest.flights")
    assert (flights.state, flights.try_number) == ("failed", 1)  # not retried: it would fail again
    connect(source_api.url, source_api.token)  # the good API
    dag_run = run_once(pipeline_dag, as_of=JANUARY)
    assert dag_run.state == "success", failures(dag_run)
    assert_same(bare_january, fresh_warehouse)
