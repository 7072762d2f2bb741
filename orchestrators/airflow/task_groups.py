"""The two task groups Quartet's DAGs are built from: the dlt ingestion as TaskFlow tasks, one
per resource, and the dbt project as a Cosmos ``DbtTaskGroup``, one task per model and its tests.

Every task that writes runs in the ``quartet_warehouse`` pool (one slot on DuckDB, one per
ingestion unit on PostgreSQL: environment.writer_pool) and alerts on failure; the policy comes
from core/ingestion.toml's ``[orchestration]`` (tasks.retry_args).
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from airflow.sdk import Param, TaskGroup, get_current_context, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior
from cosmos.operators.local import DbtTestLocalOperator

from core import kit, project, settings
from core.ingestion import load_config, month_start
from orchestrators.airflow import NAME, WAREHOUSE_POOL, assets, tasks

CONFIG = load_config()
POLICY = tasks.checked(kit.policy())
#: the first and the last month's run (a run's data interval is its month)
START, END = (
    datetime.combine(month_start(month), time(), UTC)
    for month in (CONFIG.partitions_from, CONFIG.partitions_to)
)
# the configured warehouse (a DuckDB file, or QUARTET_WAREHOUSE_URL), where dbt's profile reads it
PIPELINE = settings.export_dbt_env(settings.for_pipeline(NAME))

# -- paths and profile ----------------------------------------------------------------------
PROJECT = ProjectConfig(
    dbt_project_path=settings.TRANSFORM_DIR,
    manifest_path=assets.MANIFEST_PATH,
    project_name=project.current().dbt_project_name,
    install_dbt_deps=False,  # core ran `dbt deps` when it prepared the manifest
)


def profile() -> ProfileConfig:
    """dbt's profile for the warehouse configured when a DAG file is parsed (this module is
    imported once per process, a DAG file parsed again for every DagBag: a parse after
    QUARTET_WAREHOUSE_URL changed must reach the new warehouse)."""
    pipeline = settings.export_dbt_env(settings.for_pipeline(NAME))
    return ProfileConfig(
        profile_name=project.current().dbt_profile,
        # Cosmos passes --target: DuckDB, or postgres for a QUARTET_WAREHOUSE_URL
        target_name=pipeline.dbt_env()[settings.DBT_TARGET_ENV],
        profiles_yml_filepath=settings.PROFILES_DIR / "profiles.yml",
    )


# -- the policy every DAG's tasks share --------------------------------------------------------
DEFAULT_ARGS = {
    "pool": WAREHOUSE_POOL,
    "on_failure_callback": tasks.alert_on_failure,
    **tasks.retry_args(POLICY),
}
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


# -- ingestion: one TaskFlow task per dlt resource ---------------------------------------------
@task
def ingest(resource: str) -> dict[str, int]:
    """Load one resource of the source API into raw.<resource> (dlt, merge on id+updated_at)."""
    return tasks.ingest_resource(resource, get_current_context())


def ingestion() -> TaskGroup:
    with TaskGroup("ingest", tooltip="one task per dlt resource") as group:
        for resource in CONFIG.resources:
            ingest.override(task_id=resource, outlets=[assets.RAW[resource]])(resource)
    return group


# -- transformation: dbt through Cosmos, one task per model (the model and its tests) -----------
DBT_TASK_ARGS = {
    "retries": 0,  # a failed model or data test fails again (core.failures: DbtBuildError)
    "callback": tasks.release_duckdb,
}


def transformation() -> DbtTaskGroup:
    dbt_profile = profile()
    group = DbtTaskGroup(
        group_id="dbt",
        project_config=PROJECT,
        profile_config=dbt_profile,
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL, invocation_mode=InvocationMode.DBT_RUNNER
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            # a relationships test reads two models: its own task, after both (not in either's)
            should_detach_multiple_parents_tests=True,
            emit_datasets=False,  # the Assets are declared below, from the manifest
        ),
        operator_args=DBT_TASK_ARGS,
    )
    with group:
        # tests declared on the raw tables (dbt sources): before anything reads them
        source_tests = DbtTestLocalOperator(
            task_id="raw_sources_test",
            select=["source:*"],
            project_dir=str(settings.TRANSFORM_DIR),
            profile_config=dbt_profile,
            invocation_mode=InvocationMode.DBT_RUNNER,
            inlets=list(assets.RAW.values()),
            emit_datasets=False,
            install_deps=False,  # (an operator outside the task group reads no ProjectConfig)
            **DBT_TASK_ARGS,
        )
    for unique_id, operator in group.tasks_map.items():
        if unique_id in assets.MODELS:
            operator.inlets = assets.parents(unique_id)
            operator.outlets = [assets.MODELS[unique_id]]
            if any(
                p in assets.SOURCES
                for p in assets.MANIFEST["nodes"][unique_id]["depends_on"]["nodes"]
            ):
                source_tests >> operator
    return group
