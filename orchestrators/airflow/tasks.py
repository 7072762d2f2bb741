"""What the Airflow tasks call: thin wrappers over core (the pipeline's logic lives there once).

Kept out of the DAG file so the DAG file reads as a DAG: tasks, assets, schedules, policies.
"""

from __future__ import annotations

from core import alerts, settings, warehouse
from core.dbt import DbtBuildError, release_warehouse
from core.ingestion import ConfigError, RunWindow, load_config, window
from core.pipeline import ingest
from core.source import MalformedRecordError
from orchestrators.airflow import NAME, SOURCE_API_CONN

#: run types whose data interval is the partition (a manual run loads what it is asked for)
INTERVAL_RUN_TYPES = {"scheduled", "backfill"}

#: ``(run_id, task_id) -> "ExceptionType: message"`` of the tasks that failed in this process.
#: A dev-mode run (``dag.test()`` runs its tasks in-process) names them in its terminal
#: message: the culprit (a refused token, a malformed record) is otherwise only in the log.
FAILED_TASKS: dict[tuple[str, str], str] = {}


def run_window(context, resource: str) -> RunWindow:
    """The window of one ingestion task: params (as_of, partition) or the run's data interval."""
    params = context["params"]
    partition = params.get("partition") or None
    run = context["dag_run"]
    if partition is None and str(run.run_type) in INTERVAL_RUN_TYPES:
        partition = context["data_interval_start"].strftime("%Y-%m")
    config = load_config()
    return window(config, as_of=params.get("as_of") or None, partition=partition).only(resource)


def causes(exc: BaseException):
    """The exception and every exception it was raised from or while handling."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def no_retry_fixes(exc: BaseException) -> bool:
    """A failure that fails again however often it is retried: bad config, a record that breaks
    the contract, a failing dbt build, a token the API refuses (401/403), an API that stayed
    unreachable through dlt's own HTTP retries. Retrying these only multiplies dlt's retries."""
    for cause in causes(exc):
        if isinstance(cause, ConfigError | MalformedRecordError | DbtBuildError):
            return True
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if status in (401, 403):
            return True
        if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(cause):
            return True
    return False


def ingest_resource(resource: str, context) -> dict[str, int]:
    """Load one dlt resource for this run's window; the API's URL and token come from the
    ``quartet_source_api`` connection (the token is its password, masked by Airflow).

    Goes through core.pipeline.ingest, which settles a package a failed run left behind before
    it extracts again. Errors no retry fixes fail the task at once (AirflowFailException); the
    task's retries are left to transient ones (a held warehouse lock, a lost worker)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowFailException

    connection = BaseHook.get_connection(SOURCE_API_CONN)
    try:
        result = ingest(
            NAME,
            run_window(context, resource),
            base_url=connection.host,
            token=connection.password,
            log=print,
        )
    except Exception as exc:
        if no_retry_fixes(exc):
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise
    return {"fetched": result.rows_fetched[resource], "new": result.new_rows[resource]}


def release_duckdb(project_dir: str, **_) -> None:
    """Cosmos callback after each dbt invocation: dbt-duckdb keeps the warehouse open for the
    life of the process, which matters when tasks run in-process (``dag.test()``)."""
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


def source_status() -> dict:
    """The API's clock and watermark (its URL and token from the Airflow connection)."""
    from airflow.sdk import BaseHook

    from core.source_api import api_status

    connection = BaseHook.get_connection(SOURCE_API_CONN)
    return api_status(connection.host, connection.password)


def loaded_watermark() -> str | None:
    """The newest ``updated_at`` the warehouse has loaded (None before the first load)."""
    return warehouse.loaded_watermark(settings.for_pipeline(NAME).location)
