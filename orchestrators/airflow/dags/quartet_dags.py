"""Quartet's DAGs: the shared dlt + dbt pipeline as Airflow tasks.

* ``quartet_pipeline``: one task per dlt resource, then the dbt project through Cosmos (one task
  per model, running the model and its tests), monthly; the data interval is the partition.
* ``quartet_ingest`` / ``quartet_transform``: the two halves alone.
* ``quartet_marts_published``: scheduled on the mart Assets (data-aware scheduling).
* ``quartet_source_watch``: a sensor on the source API that triggers the pipeline when the
  API has published data the warehouse has not loaded yet.

Every warehouse table is an Asset; every writer runs in the ``quartet_warehouse`` pool (one slot
on DuckDB, one per ingestion unit on PostgreSQL: environment.writer_pool).
The logic lives in core/ and transform/; this file only says how Airflow runs it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import (
    DAG,
    Asset,
    CronDataIntervalTimetable,
    Param,
    PokeReturnValue,
    TaskGroup,
    get_current_context,
    task,
)
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import (
    ExecutionMode,
    InvocationMode,
    LoadMode,
    TestBehavior,
)
from cosmos.operators.local import DbtTestLocalOperator

from core import dbt, kit, settings
from core.ingestion import load_config, parse_partition
from orchestrators.airflow import (
    INGEST_DAG,
    MARTS_DAG,
    NAME,
    PIPELINE_DAG,
    TRANSFORM_DAG,
    WAREHOUSE_POOL,
    WATCH_DAG,
    tasks,
)

CONFIG = load_config()
POLICY = kit.policy()
# the configured warehouse (a DuckDB file, or QUARTET_WAREHOUSE_URL); also exports dbt's target
PIPELINE = settings.for_pipeline(NAME)
MANIFEST_PATH = dbt.prepare_manifest()
MANIFEST = json.loads(MANIFEST_PATH.read_text())


# -- Assets: every warehouse table -----------------------------------------------------------
def table_asset(schema: str, table: str) -> Asset:
    return Asset(
        name=f"{schema}.{table}",
        uri=f"duckdb://quartet/{NAME}/{schema}/{table}",
        group=schema,
    )


RAW_ASSETS = {resource: table_asset(settings.RAW_SCHEMA, resource) for resource in CONFIG.resources}
MODEL_ASSETS = {
    unique_id: table_asset(node["config"]["schema"], node["name"])
    for unique_id, node in MANIFEST["nodes"].items()
    if node["resource_type"] == "model"
}
SOURCE_ASSETS = {
    unique_id: RAW_ASSETS[source["identifier"] or source["name"]]
    for unique_id, source in MANIFEST["sources"].items()
}
MART_ASSETS = [
    asset
    for asset in MODEL_ASSETS.values()
    if asset.group == "marts" and not asset.name.split(".")[1].startswith(("fct_", "dim_"))
]

# -- Run policy ------------------------------------------------------------------------------
# the partition range: the first and the last month's run (its data interval is that month)
START = datetime(*parse_partition(CONFIG.partitions_from), 1, tzinfo=UTC)
END = datetime(*parse_partition(CONFIG.partitions_to), 1, tzinfo=UTC)
PARAMS = {
    "as_of": Param(
        None,
        type=["null", "string"],
        format="date",
        description="The source API's clock for this run (YYYY-MM-DD); empty: all it has.",
    ),
    "partition": Param(
        None,
        type=["null", "string"],
        pattern=r"^\d{4}-\d{2}$",
        description="A month YYYY-MM; empty: the data interval of a scheduled or backfill run, "
        "everything for a manual run.",
    ),
}
WRITER_ARGS = {
    "pool": WAREHOUSE_POOL,  # DuckDB: one slot, one writer at a time; PostgreSQL: one per unit
    "on_failure_callback": tasks.alert_on_failure,
}
INGEST_RETRIES = {  # for transient failures only: tasks.ingest_resource fails the rest at once
    "retries": POLICY.unit_retries,
    "retry_delay": timedelta(seconds=POLICY.retry_delay_seconds),
    "retry_exponential_backoff": POLICY.retry_backoff,
    "max_retry_delay": timedelta(seconds=POLICY.max_retry_delay_seconds),
}


def dag_args(doc: str) -> dict:
    return {
        "start_date": START,
        "end_date": END,
        "catchup": False,
        "max_active_runs": 1,
        "params": PARAMS,
        "default_args": WRITER_ARGS,
        "tags": ["quartet"],
        "doc_md": doc,
    }


# -- Ingestion: one task per dlt resource ------------------------------------------------------
@task(**INGEST_RETRIES)
def ingest(resource: str) -> dict[str, int]:
    """Load one resource of the source API into raw.<resource> (dlt, merge on id+updated_at)."""
    return tasks.ingest_resource(resource, get_current_context())


def ingestion() -> TaskGroup:
    with TaskGroup("ingest", tooltip="one task per dlt resource") as group:
        for resource in CONFIG.resources:
            ingest.override(task_id=resource, outlets=[RAW_ASSETS[resource]])(resource)
    return group


# -- Transformation: dbt through Cosmos, one task per model (model + its tests) ------------------
PROFILE = ProfileConfig(
    profile_name="quartet",
    # Cosmos passes --target: the one settings.for_pipeline chose for the configured warehouse
    target_name=os.environ[settings.DBT_TARGET_ENV],
    profiles_yml_filepath=settings.TRANSFORM_DIR / "profiles.yml",
)
DBT_TASK_ARGS = {
    "install_deps": False,
    "retries": 0,  # a failed model or data test fails again: no point retrying
    "callback": tasks.release_duckdb,
}


def transformation() -> DbtTaskGroup:
    group = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(
            dbt_project_path=settings.TRANSFORM_DIR,
            manifest_path=MANIFEST_PATH,
            project_name="quartet",
        ),
        profile_config=PROFILE,
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL, invocation_mode=InvocationMode.DBT_RUNNER
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            # a relationships test reads two models: its own task, after both (not in either's)
            should_detach_multiple_parents_tests=True,
            emit_datasets=False,  # the Assets are declared below, statically
        ),
        operator_args=DBT_TASK_ARGS,
    )
    with group:
        # tests declared on the raw tables (dbt sources): before anything reads them
        source_tests = DbtTestLocalOperator(
            task_id="raw_sources_test",
            select=["source:*"],
            project_dir=str(settings.TRANSFORM_DIR),
            profile_config=PROFILE,
            invocation_mode=InvocationMode.DBT_RUNNER,
            inlets=list(RAW_ASSETS.values()),
            emit_datasets=False,  # as the group's tasks: its inlets are declared statically
            **DBT_TASK_ARGS,
        )
    for unique_id, operator in group.tasks_map.items():
        if unique_id in MODEL_ASSETS:
            parents = MANIFEST["nodes"][unique_id]["depends_on"]["nodes"]
            operator.inlets = [MODEL_ASSETS.get(p) or SOURCE_ASSETS[p] for p in parents]
            operator.outlets = [MODEL_ASSETS[unique_id]]
            if any(p in SOURCE_ASSETS for p in parents):
                source_tests >> operator
    return group


# -- The DAGs ----------------------------------------------------------------------------------
with DAG(
    PIPELINE_DAG,
    schedule=CronDataIntervalTimetable(POLICY.schedule, timezone="UTC"),
    **dag_args("The full pipeline: ingest every resource, then build the dbt project."),
) as pipeline_dag:
    ingestion() >> transformation()

with DAG(INGEST_DAG, schedule=None, **dag_args("Ingestion only: one task per dlt resource.")):
    ingestion()

with DAG(TRANSFORM_DAG, schedule=None, **dag_args("Transformation only: dbt build via Cosmos.")):
    transformation()

with DAG(
    MARTS_DAG,
    schedule=MART_ASSETS[0] & MART_ASSETS[1] & MART_ASSETS[2],
    start_date=START,
    catchup=False,
    tags=["quartet"],
    doc_md="Runs when every mart has been rebuilt: data-aware scheduling on the mart Assets.",
):

    @task(pool=WAREHOUSE_POOL, inlets=MART_ASSETS)
    def report_marts() -> dict[str, int]:
        from core.warehouse import table_counts

        counts = table_counts(PIPELINE.location, ("marts",))
        for table, rows in counts.items():
            print(f"{table}: {rows:,} rows")
        return counts

    report_marts()

# the watch DAG runs a sensor every few polls; a run ends (soft fail) before the next starts
WATCH_EVERY = timedelta(seconds=POLICY.source_poll_seconds * 10)

with DAG(
    WATCH_DAG,
    schedule=WATCH_EVERY,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["quartet"],
    doc_md="Event trigger: runs the pipeline when the source API has published new data.",
):

    @task.sensor(
        poke_interval=POLICY.source_poll_seconds,
        timeout=WATCH_EVERY.total_seconds() - POLICY.source_poll_seconds,
        mode="reschedule",  # between pokes the sensor holds no executor slot
        soft_fail=True,
    )
    def new_source_data() -> PokeReturnValue:
        """Done when the API's watermark is past the newest record the warehouse has loaded."""
        status = tasks.source_status()
        loaded = tasks.loaded_watermark()
        new = status["watermark"] is not None and (loaded is None or status["watermark"] > loaded)
        print(f"source watermark {status['watermark']}, loaded {loaded}: new data={new}")
        return PokeReturnValue(is_done=new, xcom_value=status["as_of"][:10])

    TriggerDagRunOperator(
        task_id="run_pipeline",
        trigger_dag_id=PIPELINE_DAG,
        conf={"as_of": new_source_data()},
        logical_date=None,
    )
