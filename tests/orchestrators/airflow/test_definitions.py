"""The DAG file loads cleanly and declares what the adapter promises (fast: no runs here)."""

from __future__ import annotations

import json

from core import settings
from core.ingestion import load_config
from core.kit import policy
from core.lineage import canonical
from orchestrators.airflow import (
    INGEST_DAG,
    MARTS_DAG,
    PIPELINE_DAG,
    TRANSFORM_DAG,
    WAREHOUSE_POOL,
    WATCH_DAG,
)


def test_dagbag_has_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert set(dag_bag.dag_ids) == {PIPELINE_DAG, INGEST_DAG, TRANSFORM_DAG, MARTS_DAG, WATCH_DAG}


def test_one_task_per_resource_and_per_model(pipeline_dag):
    from core.dbt import load_manifest

    resources = load_config().resources
    models = {n["name"] for n in load_manifest()["nodes"].values() if n["resource_type"] == "model"}
    ids = set(pipeline_dag.task_ids)
    assert {f"ingest.{r}" for r in resources} <= ids
    assert {f"dbt.{m}_model_build" for m in models} <= ids
    # the coordination point: every dbt task runs after every ingestion task
    for model in models:
        upstream = pipeline_dag.get_task(f"dbt.{model}_model_build").get_flat_relative_ids(
            upstream=True
        )
        assert {f"ingest.{r}" for r in resources} <= upstream


def test_writer_policy_schedule_and_retries(pipeline_dag, dag_bag):
    from airflow.models.pool import Pool
    from airflow.sdk import CronDataIntervalTimetable

    assert pipeline_dag.max_active_runs == 1
    assert isinstance(pipeline_dag.timetable, CronDataIntervalTimetable)
    assert pipeline_dag.timetable.expression == policy().schedule  # monthly
    assert Pool.get_pool(WAREHOUSE_POOL).slots == 1
    for dag_id in (PIPELINE_DAG, INGEST_DAG, TRANSFORM_DAG):
        for task in dag_bag.get_dag(dag_id).tasks:
            assert task.pool == WAREHOUSE_POOL, task.task_id
            assert task.on_failure_callback, task.task_id
    ingest = pipeline_dag.get_task("ingest.flights")
    assert ingest.retries == policy().unit_retries
    assert ingest.max_retry_delay.total_seconds() == policy().max_retry_delay_seconds


def test_every_table_is_an_asset_and_marts_schedule_a_dag(pipeline_dag, dag_bag):
    outlets = {a.name for t in pipeline_dag.tasks for a in t.outlets}
    expected = {f"raw.{r}" for r in load_config().resources}
    expected |= {f"{layer}.{node}" for node, layer in canonical().nodes.items() if layer != "raw"}
    assert outlets == expected
    marts = dag_bag.get_dag(MARTS_DAG)
    condition = marts.timetable.asset_condition  # mart_a & mart_b & mart_c
    scheduled_on = {asset.name for asset in condition.objects}
    assert scheduled_on == {
        "marts.carrier_month_performance",
        "marts.route_stats",
        "marts.weather_delay_impact",
    }


def test_lineage_equals_canonical(pipeline_dag):
    from orchestrators.airflow.lineage import declared_graph

    assert canonical().difference(declared_graph(pipeline_dag)) == []


def test_token_is_not_in_the_serialized_dags(dag_bag, source_api):
    from airflow.serialization.serialized_objects import DagSerialization

    for dag in dag_bag.dags.values():
        text = json.dumps(DagSerialization.to_dict(dag), default=str)
        assert source_api.token not in text
        assert settings.DEV_API_TOKEN not in text


def test_data_interval_is_the_partition():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from orchestrators.airflow.tasks import run_window

    def context(run_type: str, params: dict | None = None) -> dict:
        return {
            "params": params or {},
            "dag_run": SimpleNamespace(run_type=run_type),
            "data_interval_start": datetime(2013, 3, 1, tzinfo=UTC),
        }

    assert run_window(context("scheduled"), "flights").partition == "2013-03"
    assert run_window(context("backfill"), "flights").partition == "2013-03"
    assert run_window(context("manual"), "flights").partition is None
    manual = run_window(
        context("manual", {"partition": "2013-05", "as_of": "2013-06-30"}), "weather"
    )
    assert (manual.partition, manual.as_of, manual.resources) == (
        "2013-05",
        "2013-06-30",
        ("weather",),
    )


def test_only_transient_failures_are_retried():
    """Errors no retry fixes fail the task at once; a held warehouse or a lost worker retries."""
    from types import SimpleNamespace

    from core.dbt import DbtBuildError
    from core.ingestion import ConfigError
    from core.pipeline import IngestionError
    from core.source import MalformedRecordError
    from core.warehouse import WarehouseBusyError
    from orchestrators.airflow.tasks import no_retry_fixes

    def raised_from(cause: BaseException) -> IngestionError:
        try:
            raise IngestionError("ingesting flights failed") from cause
        except IngestionError as exc:
            return exc

    unauthorized = OSError("401 Client Error")
    unauthorized.response = SimpleNamespace(status_code=401)
    assert no_retry_fixes(raised_from(unauthorized))
    assert no_retry_fixes(raised_from(MalformedRecordError("no primary key field 'id'")))
    assert no_retry_fixes(raised_from(ConnectionRefusedError(111, "Connection refused")))
    assert no_retry_fixes(ConfigError("bad --as-of"))
    assert no_retry_fixes(DbtBuildError("dbt build failed", []))
    assert not no_retry_fixes(WarehouseBusyError("held by another writer"))
    busy = OSError("503 Service Unavailable")
    busy.response = SimpleNamespace(status_code=503)
    assert not no_retry_fixes(raised_from(busy))


def test_progress_names_each_task_as_a_unit():
    from orchestrators.airflow.run import unit_of

    assert unit_of("ingest.flights") == ("ingest", "flights")
    assert unit_of("dbt.stg_flights_model_build") == ("dbt", "stg_flights")
    assert unit_of("dbt.raw_sources_test") == ("test", "raw_sources")


def test_a_second_dev_run_waits_for_the_first_naming_it(capsys):
    """Two ``quartet run airflow`` at once would share one SQLite metadata DB: the second waits
    for the first (a file lock the kernel drops if the first is killed), and says for whom."""
    import os
    import threading

    from orchestrators.airflow.run import one_dev_run_at_a_time

    inside, leave, leaving = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with one_dev_run_at_a_time():
            inside.set()
            leave.wait(30)
            leaving.set()  # the last thing before the lock is released

    holder = threading.Thread(target=first)
    holder.start()
    assert inside.wait(30)
    threading.Timer(1.0, leave.set).start()
    with one_dev_run_at_a_time():
        assert leaving.is_set()  # entered only once the first was done
    holder.join(30)
    said = capsys.readouterr().out
    assert f"waiting for the dev-mode run of PID {os.getpid()} to end" in said
