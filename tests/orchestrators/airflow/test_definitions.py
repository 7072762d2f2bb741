"""The DAG file loads cleanly and declares what the adapter promises (fast: no runs here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest

from core import settings
from core.failures import ConfigError
from core.ingestion import OrchestrationPolicy, load_config
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
from tests.failure_cases import CASES
from tests.helpers import SHOP, in_project

IDS = [case_id for case_id, _, _ in CASES]


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
    condition = marts.timetable.asset_condition  # every leaf, all of them updated
    scheduled_on = {asset.name for asset in condition.objects}
    graph = canonical()
    read = {parent for parent, _ in graph.edges}
    leaves = {f"{layer}.{node}" for node, layer in graph.nodes.items() if node not in read}
    assert scheduled_on == leaves
    # fct_flights is read by the marts built on it: their rebuild is the signal, not its own
    assert {"marts.route_stats", "marts.dim_planes"} <= scheduled_on
    assert "marts.fct_flights" not in scheduled_on


#: what the shop project's DAGs look like to Airflow, printed by a process of its own (the
#: project is chosen per process: QUARTET_PROJECT, read when the DAG files are parsed)
SHOP_DAGS = """
import json

from orchestrators.airflow.harness import environment

environment.configure()  # before Airflow reads its configuration

from airflow.dag_processing.dagbag import DagBag

from core.dbt import prepare_manifest

prepare_manifest()  # as `quartet run` does, before the DAG files read the manifest
bag = DagBag(dag_folder=str(environment.DAGS_FOLDER))
pipeline = bag.dags["quartet_pipeline"]
marts = bag.dags["quartet_marts_published"]
print("RESULT " + json.dumps({
    "import_errors": {path: str(error) for path, error in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "marts_schedule": sorted(a.name for a in marts.timetable.asset_condition.objects),
    "ingest_tasks": sorted(t for t in pipeline.task_ids if t.startswith("ingest.")),
    "timetable": type(pipeline.timetable).__name__,
    "params": sorted(pipeline.params),
}))
"""


def test_a_project_without_partitions_or_probe_parses_without_a_watch(quartet_home):
    """The shop's CSV export (examples/shop: raw dataset shop_raw, no partitions, no freshness
    probe, no demo API): every DAG file imports; no source-watch DAG (nothing to poll); the
    marts DAG waits on the graph's leaves, in the shop's own schema; one ingestion task per
    resource the shop declares; runs on the policy's cron with no data interval to slice and no
    partition or clock to ask for."""
    found = in_project(SHOP, SHOP_DAGS)

    assert found["import_errors"] == {}
    assert WATCH_DAG not in found["dag_ids"]
    assert found["dag_ids"] == sorted([PIPELINE_DAG, INGEST_DAG, TRANSFORM_DAG, MARTS_DAG])
    assert found["marts_schedule"] == ["shop_marts.customers", "shop_marts.store_daily_revenue"]
    tables = ["customers", "order_items", "orders", "products", "stores"]
    assert found["ingest_tasks"] == [f"ingest.{table}" for table in tables]
    assert found["timetable"] == "CronTriggerTimetable"
    assert found["params"] == []


def test_lineage_equals_canonical(pipeline_dag):
    from orchestrators.airflow.harness.lineage import declared_graph

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

    from airflow.sdk.api.datamodels._generated import DagRunType

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
    # what a task gets at run time: the Task SDK's DagRunType (an Enum, not its string)
    for run_type, expected in ((DagRunType.BACKFILL, "2013-03"), (DagRunType.MANUAL, None)):
        assert run_window(context(run_type), "flights").partition == expected
    manual = run_window(
        context("manual", {"partition": "2013-05", "as_of": "2013-06-30"}), "weather"
    )
    assert (manual.partition, manual.as_of, manual.resources) == (
        "2013-05",
        "2013-06-30",
        ("weather",),
    )


@pytest.mark.parametrize(
    ("scheme", "scheduled", "timetable"),
    [
        ("daily", "2013-03-05", "CronDataIntervalTimetable"),
        ("monthly", "2013-03", "CronDataIntervalTimetable"),
        ("none", None, "CronTriggerTimetable"),
    ],
)
def test_time_follows_the_project_s_partitions(monkeypatch, scheme, scheduled, timetable):
    """A scheduled run's partition is its data interval's (a day, a month) on a timetable of
    that length; without partitions, runs fire on the policy's cron and slice nothing."""
    from datetime import UTC, datetime

    from core import project
    from orchestrators.airflow import task_groups
    from orchestrators.airflow.tasks import run_window

    first, last = {"daily": ("2013-03-01", "2013-03-31"), "monthly": ("2013-01", "2013-12")}.get(
        scheme, (None, None)
    )
    declared = replace(project.current(), partitions=project.Partitions(scheme, first, last))
    monkeypatch.setattr(project, "current", lambda: declared)
    monkeypatch.setattr(task_groups, "PARTITIONS", declared.partitions)
    context = {
        "params": {},
        "dag_run": SimpleNamespace(run_type="scheduled"),
        "data_interval_start": datetime(2013, 3, 5, tzinfo=UTC),
    }
    assert run_window(context, "flights").partition == scheduled
    schedule = task_groups.pipeline_schedule()
    assert type(schedule).__name__ == timetable
    expected = "0 0 * * *" if scheme == "daily" else policy().schedule
    assert schedule.expression == expected


@pytest.mark.parametrize(("exc", "retry"), [(make, retry) for _, make, retry in CASES], ids=IDS)
def test_failure_policy_maps_to_airflow_fail_exception(exc, retry):
    """core.failures' answer in Airflow's idiom: no retry helps -> AirflowFailException (the
    task fails at once, its retries left unused); else the error itself, which Airflow retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from orchestrators.airflow.tasks import airflow_failure

    error = exc()
    answer = airflow_failure(error)
    assert isinstance(answer, AirflowFailException) is not retry
    assert (answer is error) is retry


def retry_waits(policy: OrchestrationPolicy) -> list[float]:
    """The waits Airflow itself computes (``TaskInstance.next_retry_datetime``) for an ingestion
    task built with the adapter's retry arguments for ``policy``, one per retry."""
    from datetime import UTC, datetime

    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import BaseOperator

    from orchestrators.airflow.tasks import retry_args

    task = BaseOperator(task_id="ingest_flights", **retry_args(policy))
    end = datetime(2013, 1, 1, tzinfo=UTC)
    waits = []
    for try_number in range(1, task.retries + 1):
        ti = SimpleNamespace(
            task=task,
            try_number=try_number,
            end_date=end,
            retry_delay_override=None,
            dag_id="quartet_pipeline",
            task_id=task.task_id,
            logical_date=end,
        )
        waits.append((TaskInstance.next_retry_datetime(ti) - end).total_seconds())
    return waits


@pytest.mark.parametrize("backoff", [2.0, 3.0])
def test_retry_waits_follow_the_policy(backoff):
    """retry_backoff changes Airflow's waits: each is the policy's delay for that retry, or up to
    twice it (Airflow's own spread, by a hash of the try), never past max_retry_delay_seconds."""
    policy = replace(
        OrchestrationPolicy(), unit_retries=3, retry_delay_seconds=2.0, retry_backoff=backoff
    )
    waits = retry_waits(policy)
    assert len(waits) == 3
    for wait, delay in zip(waits, policy.retry_delays(), strict=True):
        assert delay <= wait < 2 * delay or wait == policy.max_retry_delay_seconds, (wait, delay)
    assert waits[1] >= 2.0 * backoff  # the second wait has grown by the configured backoff


@pytest.mark.parametrize("heartbeat", [10.0, 45.5])
def test_a_policy_airflow_cannot_honour_is_refused_by_name(heartbeat):
    from orchestrators.airflow.tasks import checked

    policy = replace(OrchestrationPolicy(), heartbeat_seconds=heartbeat)
    with pytest.raises(
        ConfigError,
        match=rf"^airflow cannot honour \[orchestration\] heartbeat_seconds = {heartbeat}: ",
    ):
        checked(policy)
    assert checked(replace(policy, heartbeat_seconds=60.0)).heartbeat_seconds == 60.0


def test_progress_names_each_task_as_a_unit():
    from orchestrators.airflow.harness.run import unit_of

    assert unit_of("ingest.flights") == ("ingest", "flights")
    assert unit_of("dbt.stg_flights_model_build") == ("dbt", "stg_flights")
    assert unit_of("dbt.raw_sources_test") == ("test", "raw_sources")


def test_a_second_dev_run_waits_for_the_first_naming_it(capsys):
    """Two ``quartet run airflow`` at once would share one SQLite metadata DB: the second waits
    for the first (a file lock the kernel drops if the first is killed), and says for whom."""
    import os
    import threading

    from orchestrators.airflow.harness.run import one_dev_run_at_a_time

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


def test_quartet_run_refuses_the_policy_in_one_message(tmp_path):
    """A field Airflow cannot honour stops ``quartet run airflow`` before anything starts:
    exit 2 and one line naming the adapter and the field."""
    toml = settings.INGESTION_CONFIG.read_text()
    assert "heartbeat_seconds = 30" in toml
    config = tmp_path / "ingestion.toml"
    config.write_text(toml.replace("heartbeat_seconds = 30", "heartbeat_seconds = 5"))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrators.airflow", "run", "--as-of", "2013-01-31"],
        env={**os.environ, "QUARTET_INGESTION_CONFIG": str(config)},
        cwd=settings.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "quartet run airflow: airflow cannot honour [orchestration] heartbeat_seconds = 5.0: the "
        "scheduler's task heartbeat timeout is whole seconds, and below 30 a task busy on a "
        "loaded machine is failed as lost"
    ]
