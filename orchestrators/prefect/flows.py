"""The pipeline as Prefect flows over the shared core.

* ``quartet-ingestion``: one task run per dlt resource (``ingest flights``, ...), each a
  materializing task of its raw table's asset, retried with bounded exponential backoff;
* ``quartet-transformation``: ``dbt build`` through prefect-dbt's ``PrefectDbtRunner``, one task
  run per dbt node (models, data tests, unit tests); a failed node fails the flow;
* ``quartet-pipeline``: both as subflows (an ingestion subflow per month when partitions are
  given); the subflow boundary is the coordination point between ingestion and transformation.

Every writer of the warehouse occupies the one slot of the global concurrency limit
``quartet-warehouse-prefect``; the source API token comes from the ``quartet-source-api-token``
Secret block; a failed top-level flow run posts an alert from its ``on_failure`` hook.
"""

from __future__ import annotations

import datetime as dt
import os

from dbt_common.events.base_types import EventLevel
from prefect import flow, get_run_logger
from prefect.assets import Asset, AssetProperties, materialize
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import Flow, FlowRun, State, TaskRun
from prefect.concurrency.sync import concurrency
from prefect.tasks import MaterializingTask, Task, exponential_backoff
from prefect.utilities.urls import url_for
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings
from prefect_dbt.utilities import format_resource_id

from core import alerts, dbt, settings, warehouse
from core.ingestion import ConfigError, load_config, window
from core.pipeline import ingest
from core.source import MalformedRecordError
from core.warehouse import WarehouseBusyError
from orchestrators.prefect import NAME, TOKEN_BLOCK, WAREHOUSE_LIMIT


def alert_on_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_failure hook: one alert per failed top-level run (a failed subflow fails its parent)."""
    if flow_run.parent_task_run_id is not None:
        return
    payload = alerts.alert_payload(
        NAME, flow.name, str(flow_run.id), state.message or str(state.type), url_for(flow_run)
    )
    alerts.send_alert(payload)


def writer_slot():
    """The warehouse's one writer slot; waits up to QUARTET_LOCK_TIMEOUT, then fails clearly."""
    return concurrency(
        WAREHOUSE_LIMIT, occupy=1, timeout_seconds=warehouse.lock_timeout(), strict=True
    )


def source_url() -> str:
    url = os.environ.get(settings.SOURCE_API_URL_ENV)
    if not url:
        raise RuntimeError(
            f"{settings.SOURCE_API_URL_ENV} is not set: start the flows through "
            "`python -m orchestrators.prefect run|ui`, which start the source API, or export it"
        )
    return url


def raw_asset(resource: str) -> Asset:
    """The raw table's asset, keyed as prefect-dbt keys the dbt source that reads it."""
    database = settings.for_pipeline(NAME, export=False).warehouse.stem
    relation = f'"{database}"."{settings.RAW_SCHEMA}"."{resource}"'
    return Asset(
        key=format_resource_id("duckdb", relation),
        properties=AssetProperties(
            name=f"{database}.{settings.RAW_SCHEMA}.{resource}",
            description=f"Revisions of `{resource}` loaded by dlt from the flights source API.",
        ),
    )


def ingest_resource(resource: str, as_of: str | None, partition: str | None) -> dict[str, int]:
    """Load one resource's window (the body of each ``ingest <resource>`` task)."""
    config = load_config()
    run_window = window(config, as_of=as_of, partition=partition, resources=(resource,))
    token = Secret.load(TOKEN_BLOCK).get()
    with writer_slot():
        result = ingest(
            NAME, run_window, base_url=source_url(), token=token, config=config,
            log=get_run_logger().info,
        )  # fmt: skip
    return {"fetched": result.rows_fetched[resource], "new": result.new_rows[resource]}


def _causes(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def worth_retrying(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry what may pass next time (API faults, a busy warehouse); not a broken record,
    a wrong setting, a rejected token or a missing module."""
    try:
        state.result()
    except (TimeoutError, WarehouseBusyError):  # waited QUARTET_LOCK_TIMEOUT for the warehouse
        return False
    except Exception as exc:
        permanent = (ConfigError, MalformedRecordError, ImportError)
        if any(isinstance(e, permanent) or "401" in str(e) for e in _causes(exc)):
            return False
    return True


def ingest_task(resource: str) -> MaterializingTask:
    """The task of one resource: it materializes ``raw.<resource>``; 3 retries after 10, 20 and
    40 s (+/- 20%), on top of dlt's own HTTP retries."""
    return materialize(
        raw_asset(resource),
        by="dlt",
        name=f"ingest-{resource}",
        task_run_name=f"ingest {resource}",
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=10),
        retry_jitter_factor=0.2,
        retry_condition_fn=worth_retrying,
        cache_policy=NO_CACHE,
    )(ingest_resource)


def _as_of(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


@flow(name="quartet-ingestion", on_failure=[alert_on_failure])
def ingestion(
    as_of: dt.date | None = None, partition: str | None = None, resources: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Load one window from the source API into the raw schema: one task run per resource."""
    config = load_config()
    run_window = window(  # validates the parameters before anything runs
        config, as_of=_as_of(as_of), partition=partition, resources=tuple(resources or ())
    )
    # One after another: they share the warehouse's one writer slot anyway, and tasks submitted
    # at once would wait for it with the concurrency client's backoff (~9 s idle per full run).
    return {
        resource: ingest_task(resource)(resource, run_window.as_of, partition)
        for resource in run_window.resources
    }


def dbt_settings(pipeline: settings.PipelineSettings) -> PrefectDbtSettings:
    """transform/ with this pipeline's target dir. The log level is explicit: prefect-dbt 0.7
    derives it from Prefect's, and PREFECT_LOGGING_LEVEL=WARNING is no dbt level ("warn")."""
    return PrefectDbtSettings(
        project_dir=settings.TRANSFORM_DIR,
        profiles_dir=settings.TRANSFORM_DIR,
        target_path=pipeline.dbt_target_dir,
        log_level=EventLevel.INFO,
    )


@flow(name="quartet-transformation", on_failure=[alert_on_failure])
def transformation(select: list[str] | None = None) -> dict[str, int]:
    """``dbt build`` (models, data tests, unit tests in DAG order): one task run per dbt node."""
    pipeline = settings.for_pipeline(NAME)  # exports QUARTET_WAREHOUSE for profiles.yml
    dbt.prepare_manifest()
    dbt._seed_partial_parse(pipeline.dbt_target_dir)  # start from the prepared parse
    runner = PrefectDbtRunner(settings=dbt_settings(pipeline))
    args = ["build", "--log-path", str(pipeline.dbt_log_dir)]
    if select:
        args += ["--select", *select]
    with writer_slot(), warehouse.writer_lock(pipeline.warehouse, purpose=f"{NAME} dbt build"):
        try:
            result = runner.invoke(args)  # raises on any failed node, naming it
        finally:
            dbt._release_warehouse()  # dbt-duckdb keeps the file open for the process
    statuses = [str(r.status) for r in result.result.results]
    return {status: statuses.count(status) for status in sorted(set(statuses))}


@flow(name="quartet-pipeline", on_failure=[alert_on_failure])
def pipeline(as_of: dt.date | None = None, partitions: list[str] | None = None) -> dict:
    """Ingest, then build dbt. With partitions (a backfill): one ingestion subflow per month in
    the order given, then one dbt build over all of them."""
    config = load_config()
    for partition in partitions or []:
        window(config, as_of=_as_of(as_of), partition=partition)  # fail before any run
    ingested = {}
    for partition in partitions or [None]:
        label = partition or "latest"
        ingested[label] = ingestion.with_options(flow_run_name=f"ingestion {label}")(
            as_of=as_of, partition=partition
        )
    # the coordination point: dbt starts once every ingestion subflow has completed
    built = transformation()
    return {"ingested": ingested, "dbt": built}
