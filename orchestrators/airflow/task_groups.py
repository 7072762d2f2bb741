"""The two task groups Quartet's DAGs are built from: the dlt ingestion as TaskFlow tasks, one
per resource, and the dbt project as a Cosmos ``DbtTaskGroup``, one task per model and its tests.

Every task that writes runs in the ``quartet_warehouse`` pool (one slot on DuckDB, one per
ingestion unit on PostgreSQL: environment.writer_pool) and alerts on failure; the policy comes
from core/ingestion.toml's ``[orchestration]`` (tasks.retry_args).
"""

from __future__ import annotations

from airflow.sdk import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    Param,
    TaskGroup,
    get_current_context,
    task,
)
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior
from cosmos.operators.local import DbtTestLocalOperator

from core import kit, project, settings
from core.ingestion import load_config
from orchestrators.airflow import NAME, WAREHOUSE_POOL, assets, tasks

CONFIG = load_config()
POLICY = tasks.checked(kit.policy())
#: how the project slices time: monthly, daily, or none (a run loads whatever is new)
PARTITIONS = project.current().partitions


#: the first and the last partition's run; without partitions there is no range to start from
#: or to end at (the DAGs run from when they are deployed)
START, END = (
    (tasks.partition_start(PARTITIONS.first), tasks.partition_start(PARTITIONS.last))
    if PARTITIONS.enabled
    else (None, None)
)


def pipeline_schedule() -> CronDataIntervalTimetable | CronTriggerTimetable:
    """The pipeline DAG's timetable. With partitions, a scheduled run's data interval is the
    partition it loads: the policy's cron for monthly ones (a month from one run to the next),
    a day for daily ones. Without, runs fire on the policy's cron with no interval: each loads
    whatever the source has that the warehouse has not."""
    if PARTITIONS.scheme == "daily":
        return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    if PARTITIONS.enabled:
        return CronDataIntervalTimetable(POLICY.schedule, timezone="UTC")
    return CronTriggerTimetable(POLICY.schedule, timezone="UTC")


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
#: a partition key as the project's scheme spells it: what it is called, and its pattern
PARTITION_FORMS = {
    "monthly": ("A month YYYY-MM", r"^\d{4}-\d{2}$"),
    "daily": ("A day YYYY-MM-DD", r"^\d{4}-\d{2}-\d{2}$"),
}


def run_params() -> dict[str, Param]:
    """What a run may be asked for, as far as the project declares it: the source's clock and
    one partition (the runs Quartet starts pass the same keys: tasks.run_conf)."""
    params = {}
    if project.current().clock:
        params["as_of"] = Param(
            None,
            type=["null", "string"],
            format="date",
            description="The source's clock for this run (YYYY-MM-DD); empty: all it has.",
        )
    if PARTITIONS.enabled:
        form, pattern = PARTITION_FORMS[PARTITIONS.scheme]
        params["partition"] = Param(
            None,
            type=["null", "string"],
            pattern=pattern,
            description=f"{form}; empty: the data interval of a scheduled or backfill run, "
            "everything for a manual run.",
        )
    return params


PARAMS = run_params()


# -- ingestion: one TaskFlow task per dlt resource ---------------------------------------------
@task
def ingest(resource: str) -> dict[str, int]:
    """Load one resource of the project's dlt source into its raw table (merged on its key)."""
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
            if any(p in assets.SOURCES for p in assets.parent_ids(unique_id)):
                source_tests >> operator
    return group
