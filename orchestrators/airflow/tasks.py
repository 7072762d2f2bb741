"""What the Airflow tasks call: thin wrappers over core (the pipeline's logic lives there once).

Kept out of the DAG file so the DAG file reads as a DAG: tasks, assets, schedules, policies.
"""

from __future__ import annotations

import duckdb

from core import alerts, settings
from core.ingestion import RunWindow, load_config, window
from core.pipeline import ingest
from orchestrators.airflow import NAME, SOURCE_API_CONN

#: run types whose data interval is the partition (a manual run loads what it is asked for)
INTERVAL_RUN_TYPES = {"scheduled", "backfill"}


def run_window(context, resource: str) -> RunWindow:
    """The window of one ingestion task: params (as_of, partition) or the run's data interval."""
    params = context["params"]
    partition = params.get("partition") or None
    run = context["dag_run"]
    if partition is None and str(run.run_type) in INTERVAL_RUN_TYPES:
        partition = context["data_interval_start"].strftime("%Y-%m")
    config = load_config()
    return window(config, as_of=params.get("as_of") or None, partition=partition).only(resource)


def ingest_resource(resource: str, context) -> dict[str, int]:
    """Load one dlt resource for this run's window; the API's URL and token come from the
    ``quartet_source_api`` connection (the token is its password, masked by Airflow)."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(SOURCE_API_CONN)
    result = ingest(
        NAME,
        run_window(context, resource),
        base_url=connection.host,
        token=connection.password,
        log=print,
    )
    return {"fetched": result.rows_fetched[resource], "new": result.new_rows[resource]}


def release_duckdb(project_dir: str, **_) -> None:
    """Cosmos callback after each dbt invocation: dbt-duckdb keeps the warehouse open for the
    life of the process, which matters when tasks run in-process (``dag.test()``)."""
    from core.dbt import _release_warehouse

    _release_warehouse()


def alert_on_failure(context) -> None:
    """on_failure_callback: the shared alert payload to ALERT_WEBHOOK_URL (when it is set)."""
    ti = context["ti"]
    error = context.get("exception")
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
    path = settings.for_pipeline(NAME).warehouse
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            t
            for (t,) in con.execute(
                "select table_name from information_schema.tables where table_schema = ? "
                "and table_name not like '\\_dlt%' escape '\\'",
                [settings.RAW_SCHEMA],
            ).fetchall()
        ]
        marks = [
            con.execute(f'select max(updated_at) from {settings.RAW_SCHEMA}."{t}"').fetchone()[0]
            for t in tables
        ]
    finally:
        con.close()
    marks = [m for m in marks if m is not None]
    return max(marks).strftime("%Y-%m-%dT%H:%M:%S") if marks else None
