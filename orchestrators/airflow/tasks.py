"""What the Airflow tasks call, and Quartet's policies in Airflow's terms.

The task bodies are thin calls into core (the pipeline's logic lives there once). The policies:

* **May a retry help?** ``core.failures.may_retry``; when it says no, the task raises
  ``AirflowFailException`` and ends at once, whatever retries are left (:func:`airflow_failure`).
* **[orchestration]**, each field honoured or refused, by name, when the DAG files load
  (:func:`retry_args`, :func:`checked`):

==========================  =================================================================
unit_retries                the ingestion tasks' ``retries``
retry_delay_seconds         ``retry_delay``
retry_backoff               ``retry_exponential_backoff`` (Airflow spreads each wait between
                            one and two times the exponential delay, by a hash of the try)
max_retry_delay_seconds     ``max_retry_delay``
schedule                    the pipeline DAG's cron: ``CronDataIntervalTimetable`` with
                            monthly partitions, ``CronTriggerTimetable`` without (daily
                            partitions run daily: task_groups.pipeline_schedule)
source_poll_seconds         the source-watch sensor's ``poke_interval`` (a project that
                            declares a freshness probe)
heartbeat_seconds           deployed: ``[scheduler] task_instance_heartbeat_timeout`` (whole
                            seconds, at least 30; refused otherwise)
follow_poll_seconds         how often ``run --deployed`` polls a run
healthy_timeout_seconds     ``quartet up``: every service healthy and the DAGs parsed
==========================  =================================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from core import alerts, project, settings, warehouse
from core.failures import ConfigError, may_retry
from core.ingestion import OrchestrationPolicy, RunWindow, load_config, window
from core.pipeline import ingest
from orchestrators.airflow import NAME, SOURCE_API_CONN

#: run types whose data interval is the partition (a manual run loads what it is asked for)
INTERVAL_RUN_TYPES = {"scheduled", "backfill"}
#: below this, a task busy on a loaded machine misses heartbeats and is failed as lost
MIN_HEARTBEAT_SECONDS = 30

#: ``(run_id, task_id) -> "ExceptionType: message"`` of the tasks that failed in this process.
#: A dev-mode run (``dag.test()`` runs its tasks in-process) names them in its terminal
#: message: the culprit (a refused token, a malformed record) is otherwise only in the log.
FAILED_TASKS: dict[tuple[str, str], str] = {}


def checked(policy: OrchestrationPolicy) -> OrchestrationPolicy:
    """``policy`` when Airflow can honour every field (see the module's table), else a
    ConfigError naming the field."""
    heartbeat = policy.heartbeat_seconds
    if heartbeat != int(heartbeat) or heartbeat < MIN_HEARTBEAT_SECONDS:
        raise ConfigError(
            f"airflow cannot honour [orchestration] heartbeat_seconds = {heartbeat!r}: the "
            f"scheduler's task heartbeat timeout is whole seconds, and below "
            f"{MIN_HEARTBEAT_SECONDS} a task busy on a loaded machine is failed as lost"
        )
    return policy


def retry_args(policy: OrchestrationPolicy) -> dict:
    """The retries of a unit, as task arguments (``default_args`` of the DAGs)."""
    checked(policy)
    return {
        "retries": policy.unit_retries,
        "retry_delay": timedelta(seconds=policy.retry_delay_seconds),
        "retry_exponential_backoff": policy.retry_backoff,
        "max_retry_delay": timedelta(seconds=policy.max_retry_delay_seconds),
    }


def airflow_failure(exc: BaseException) -> BaseException:
    """What a task raises for ``exc``: ``AirflowFailException`` (no retry) when no retry helps,
    else ``exc`` itself (Airflow retries it as ``retry_args`` say)."""
    from airflow.sdk.exceptions import AirflowFailException

    if may_retry(exc):
        return exc
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


def run_window(context, resource: str) -> RunWindow:
    """The window of one ingestion task: params (as_of, partition) or, for a project with
    partitions, the partition of a scheduled or backfill run's data interval."""
    params = context["params"]
    partition = params.get("partition") or None
    partitions = project.current().partitions
    run = context["dag_run"]
    # run_type is the Task SDK's DagRunType, a str Enum: equal to its value, while its str()
    # is "DagRunType.BACKFILL" (which matched nothing, and deployed backfills loaded unsliced)
    if partition is None and partitions.enabled and run.run_type in INTERVAL_RUN_TYPES:
        partition = partitions.key(context["data_interval_start"].date())
    config = load_config()
    return window(config, as_of=params.get("as_of") or None, partition=partition).only(resource)


def partition_start(partition: str) -> datetime:
    """A partition's first instant (UTC): the logical date of the run that loads it, whose data
    interval is then the partition (as a backfill's runs are)."""
    return datetime.combine(project.current().partitions.parse(partition), time(), UTC)


def run_conf(*, as_of: str | None, partition: str | None) -> dict:
    """The conf of a pipeline run Quartet starts: the params the project declares
    (task_groups.run_params), and no others."""
    declared = project.current()
    conf = {}
    if declared.clock:
        conf["as_of"] = as_of
    if declared.partitions.enabled:
        conf["partition"] = partition
    return conf


def source_api() -> tuple[str, str]:
    """The demo API's URL and token, from the ``quartet_source_api`` connection (the token is
    its password, masked by Airflow); ``("", "")`` for a project whose source is not the demo
    API, which has no connection (as core.source_service says)."""
    if not project.current().demo_api:
        return "", ""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(SOURCE_API_CONN)
    return connection.host, connection.password


def ingest_resource(resource: str, context) -> dict[str, int]:
    """Load one dlt resource for this run's window (the demo API's address from
    :func:`source_api`).

    Goes through core.pipeline.ingest, which settles a package a failed run left behind before
    it extracts again."""
    base_url, token = source_api()
    try:
        result = ingest(
            NAME,
            run_window(context, resource),
            base_url=base_url,
            token=token,
            log=print,
        )
    except Exception as exc:
        answer = airflow_failure(exc)
        if answer is exc:
            raise
        raise answer from exc
    return {"fetched": result.rows_fetched[resource], "new": result.new_rows[resource]}


def release_duckdb(project_dir: str, **_) -> None:
    """Cosmos callback after each dbt invocation: dbt-duckdb keeps the warehouse open for the
    life of the process, which matters when tasks run in-process (``dag.test()``)."""
    from core.dbt import release_warehouse

    release_warehouse()


def alert_on_failure(context) -> None:
    """on_failure_callback: the shared alert payload to ALERT_WEBHOOK_URL (when it is set)."""
    ti = context["ti"]
    error = context.get("exception")
    FAILED_TASKS[(context["run_id"], ti.task_id)] = f"{type(error).__name__}: {error}"
    alerts.send_alert(
        alerts.alert_payload(
            NAME,
            pipeline=ti.dag_id,
            run_id=context["run_id"],
            error=f"task {ti.task_id} failed: {type(error).__name__}: {error}",
            url=getattr(ti, "log_url", None),
        )
    )


def source_published() -> str | None:
    """The source's newest publication (an ISO timestamp), from the project's freshness probe."""
    declared = project.current()
    return project.freshness(declared)(*source_api())


def mart_counts(tables: list[str]) -> dict[str, int]:
    """Rows of each of ``tables`` (``schema.table``), printed to the task log."""
    schemas = tuple(sorted({table.split(".", 1)[0] for table in tables}))
    found = warehouse.table_counts(settings.for_pipeline(NAME).location, schemas)
    counts = {table: found.get(table, 0) for table in tables}
    for table, rows in counts.items():
        print(f"{table}: {rows:,} rows")
    return counts
