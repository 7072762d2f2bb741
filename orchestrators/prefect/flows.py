"""The pipeline as Prefect flows over the shared core.

* ``quartet-pipeline``: an ingestion subflow (one per partition when partitions are given), then
  the transformation subflow: the subflow boundary is where dbt waits for every load;
* ``quartet-backfill``: a range of partitions as one parent flow run, the same way;
* ``quartet-ingestion``: one task run per dlt resource (``ingest <resource>``), each
  materializing its raw table's asset, retried when a retry may help (``policy``); one after
  another on DuckDB, all at once where the warehouse admits parallel writers (PostgreSQL);
* ``quartet-transformation``: ``dbt build`` through prefect-dbt's ``PrefectDbtRunner``, one task
  run per dbt node; a failed node fails the flow.

Time is the project's (``core.project``): partitions are months or days as its ``[time]``
section says; a project without partitions has one kind of run, which loads everything new, and
refuses partition and backfill parameters. The flows name no example: the raw tables are the
project's resources in its raw schema, and the bundled demo API's URL and token (the token from a
Secret block) are needed only by a project whose source is that API.

Every writer of the warehouse holds a slot of a global concurrency limit (``slots``); a failed
top-level run posts an alert (``reporting``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from urllib.parse import urlsplit

from dbt_common.events.base_types import EventLevel
from prefect import flow, get_run_logger
from prefect.assets import Asset, AssetProperties, materialize
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.tasks import MaterializingTask
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings
from prefect_dbt.utilities import format_resource_id

from core import dbt, kit, project, settings, warehouse
from core.failures import ConfigError, DbtBuildError
from core.ingestion import OrchestrationPolicy, load_config, window
from core.pipeline import ingest
from core.project import Partitions
from orchestrators.prefect import NAME, TOKEN_BLOCK, levers, policy, reporting
from orchestrators.prefect.reporting import alert_on_failure
from orchestrators.prefect.slots import release_stale_slots, writer_slot, writer_slots

policy.honoured(kit.policy())  # what Prefect cannot express fails here, by name

#: what one partition is called, per scheme (in messages)
UNITS = {"monthly": "month", "daily": "day"}


@flow(name="quartet-pipeline", on_failure=[alert_on_failure])
def pipeline(as_of: dt.date | None = None, partitions: list[str] | None = None) -> dict:
    """Ingest, then build dbt. With partitions (a backfill): one ingestion subflow per partition
    in the order given, then one dbt build over all of them. Without: one ingestion subflow loads
    what is new (the only kind of run of a project without partitions)."""
    return _ingest_then_build(as_of, partitions)


@flow(name="quartet-backfill", on_failure=[alert_on_failure])
def backfill(start: str, end: str, as_of: dt.date | None = None) -> dict:
    """A range of partitions (months or days) as one flow run: an ingestion subflow per
    partition, then one dbt build."""
    return _ingest_then_build(as_of, backfill_partitions(start, end))


@flow(name="quartet-ingestion", on_failure=[alert_on_failure])
def ingestion(
    as_of: dt.date | None = None, partition: str | None = None, resources: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Load one window from the source into the raw schema: one task run per resource."""
    if partition is not None:
        partitioned(f"partition {partition!r}")
    run_window = window(  # validates the parameters before anything runs
        load_config(), as_of=_as_of(as_of), partition=partition, resources=tuple(resources or ())
    )
    tasks = {resource: ingest_task(resource) for resource in run_window.resources}
    if writer_slots() == 1:
        # one after another: they would take turns on the one slot anyway
        return {r: task(r, run_window.as_of, partition) for r, task in tasks.items()}
    # all at once on the flow's thread pool; every one ends before a failed one fails the flow
    futures = {r: task.submit(r, run_window.as_of, partition) for r, task in tasks.items()}
    wait(list(futures.values()))
    return {r: future.result() for r, future in futures.items()}


@flow(name="quartet-transformation", on_failure=[alert_on_failure])
def transformation(select: list[str] | None = None) -> dict[str, int]:
    """``dbt build`` (models, data tests, unit tests in DAG order): one task run per dbt node."""
    pipeline = settings.export_dbt_env(settings.for_pipeline(NAME))
    dbt.prepare_manifest()
    levers.seed_dbt_parse(pipeline.dbt_target_dir)
    runner = PrefectDbtRunner(settings=dbt_settings(pipeline), raise_on_failure=False)
    args = ["build", "--log-path", str(pipeline.dbt_log_dir)]
    if select:
        args += ["--select", *select]
    with (
        writer_slot(occupy=writer_slots()),  # every slot: no unit loads while dbt builds
        warehouse.writer_lock(pipeline.location, purpose=f"{NAME} dbt build"),
        levers.node_task_runs_share_flow_context(),
    ):
        try:
            result = runner.invoke(args)
        finally:
            dbt.release_warehouse()  # dbt-duckdb keeps the file open (a no-op on PostgreSQL)
    if not result.success:
        failures = []
        with contextlib.suppress(OSError, ValueError):
            run_results = (pipeline.dbt_target_dir / "run_results.json").read_text()
            failures = dbt.failures_from_run_results(json.loads(run_results))
        report = dbt.failure_report(failures, f"see {pipeline.dbt_log_dir}")
        raise DbtBuildError(report, failures) from result.exception
    reporting.built(result.result.results)
    statuses = [str(r.status) for r in result.result.results]
    return {status: statuses.count(status) for status in sorted(set(statuses))}


# -- the ingestion task ---------------------------------------------------------------------------


def ingest_task(
    resource: str, orchestration: OrchestrationPolicy | None = None
) -> MaterializingTask:
    """The task of one resource: it materializes ``<raw schema>.<resource>``, retried as the
    policy says when a retry may help (on top of dlt's own retries)."""
    orchestration = policy.honoured(orchestration or kit.policy())
    return materialize(
        raw_asset(resource),
        by="dlt",
        name=f"ingest-{resource}",
        task_run_name=f"ingest {resource}",
        cache_policy=NO_CACHE,
        **policy.task_retries(orchestration),
    )(ingest_resource)


def ingest_resource(resource: str, as_of: str | None, partition: str | None) -> dict[str, int]:
    """Load one resource's window (the body of each ``ingest <resource>`` task)."""
    config = load_config()
    run_window = window(config, as_of=as_of, partition=partition, resources=(resource,))
    base_url, token = source_api()
    logger = get_run_logger()
    with writer_slot():
        result = ingest(
            NAME, run_window, base_url=base_url, token=token, config=config, log=logger.info
        )
    reporting.ingested(resource, partition, result.seconds, result.new_rows[resource])
    return {"fetched": result.rows_fetched[resource], "new": result.new_rows[resource]}


def raw_asset(resource: str) -> Asset:
    """The raw table's asset, keyed as prefect-dbt keys the dbt source that reads it (the dbt
    adapter, and the relation's database: the DuckDB file's stem or the PostgreSQL database)."""
    pipeline = settings.for_pipeline(NAME)
    adapter, database = "duckdb", pipeline.warehouse.stem
    if pipeline.warehouse_url:
        adapter, database = "postgres", urlsplit(pipeline.warehouse_url).path.strip("/")
    # dlt names the table after the resource, in the project's raw dataset (the schema its dbt
    # sources read): the same relation, so the same key, as the dbt source of that table
    relation = f'"{database}"."{settings.RAW_SCHEMA}"."{resource}"'
    return Asset(
        key=format_resource_id(adapter, relation),
        properties=AssetProperties(
            name=f"{database}.{settings.RAW_SCHEMA}.{resource}",
            description=(
                f"`{resource}` as dlt loads it from the source of the "
                f"{project.current().name} project."
            ),
        ),
    )


def source_api() -> tuple[str, str]:
    """``(url, token)`` of the bundled demo API for a project whose source is it, else
    ``("", "")``: another project's source factory (and freshness probe) knows where its data
    lives, and no API runs for it."""
    if not project.current().demo_api:
        return "", ""
    return source_url(), Secret.load(TOKEN_BLOCK).get()


def source_url() -> str:
    url = os.environ.get(settings.SOURCE_API_URL_ENV)
    if not url:
        raise ConfigError(
            f"{settings.SOURCE_API_URL_ENV} is not set: start the flows through "
            "`quartet run prefect` (which starts the source API), a deployment, or export it"
        )
    return url


# -- the rest of the flows ------------------------------------------------------------------------


def dbt_settings(pipeline: settings.PipelineSettings) -> PrefectDbtSettings:
    """The project's dbt project with this pipeline's target dir. The log level is explicit:
    prefect-dbt 0.7 derives it from Prefect's, and PREFECT_LOGGING_LEVEL=WARNING is no dbt level
    ("warn")."""
    return PrefectDbtSettings(
        project_dir=settings.TRANSFORM_DIR,
        profiles_dir=settings.PROFILES_DIR,
        target_path=pipeline.dbt_target_dir,
        log_level=EventLevel.INFO,
    )


def partitioned(what: str) -> Partitions:
    """The project's partitions; a project without them refuses ``what`` (a partition
    parameter, a backfill) by name, before anything runs."""
    chosen = project.current()
    if not chosen.partitions.enabled:
        raise ConfigError(
            f"{what}: the project {chosen.name} has no partitions ([time] partitions = 'none' "
            f"in {chosen.path}): one run of quartet-pipeline, without partitions, loads "
            "everything new"
        )
    return chosen.partitions


def backfill_partitions(start: str, end: str) -> list[str]:
    """The partitions of a backfill range (months or days, as the project slices time), both
    ends included; a range without one is refused."""
    partitions = partitioned(f"backfill {start}..{end}")
    keys, key = [], start
    while partitions.parse(key) <= partitions.parse(end):  # parses both: a typo is refused
        keys.append(key)
        key = partitions.next(key)
    if not keys:
        raise ConfigError(f"backfill range {start}..{end} holds no {UNITS[partitions.scheme]}")
    return keys


def _ingest_then_build(as_of: dt.date | str | None, partitions: list[str] | None) -> dict:
    config = load_config()
    if partitions:
        partitioned(f"partitions {partitions}")
    for partition in partitions or []:
        window(config, as_of=_as_of(as_of), partition=partition)  # fail before any run
    # a rerun of a killed run does not wait for the dead run's lease to expire
    release_stale_slots(say=get_run_logger().warning)
    ingested = {}
    for partition in partitions or [None]:
        label = partition or "latest"
        ingested[label] = ingestion.with_options(flow_run_name=f"ingestion {label}")(
            as_of=as_of, partition=partition
        )
    return {"ingested": ingested, "dbt": transformation()}


def _as_of(value: dt.date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else value
