"""The pipeline as Prefect flows over the shared core.

* ``quartet-ingestion``: one task run per dlt resource (``ingest flights``, ...), each a
  materializing task of its raw table's asset, retried for transient faults only; one after
  another on DuckDB, all at once on the flow's thread pool where the warehouse admits parallel
  writers (PostgreSQL);
* ``quartet-transformation``: ``dbt build`` through prefect-dbt's ``PrefectDbtRunner``, one task
  run per dbt node (models, data tests, unit tests); a failed node fails the flow;
* ``quartet-pipeline``: both as subflows (an ingestion subflow per month when partitions are
  given); the subflow boundary is the coordination point between ingestion and transformation;
* ``quartet-backfill``: a month range as one parent flow run, an ingestion subflow per month.

Every writer of the warehouse occupies a slot of the global concurrency limit
``quartet-warehouse-prefect`` (one slot on DuckDB, one per ingestion unit on PostgreSQL, where the
dbt build occupies them all); the source API token comes from the ``quartet-source-api-token``
Secret block; a failed top-level flow run posts an alert from its ``on_failure`` hook.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from urllib.parse import urlsplit

import prefect.context
from dbt_common.events.base_types import EventLevel
from prefect import flow, get_client, get_run_logger
from prefect.assets import Asset, AssetProperties, materialize
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import Flow, FlowRun, State, TaskRun
from prefect.concurrency.sync import concurrency
from prefect.context import SettingsContext, SyncClientContext
from prefect.futures import wait
from prefect.logging.handlers import APILogHandler
from prefect.tasks import MaterializingTask, Task
from prefect.utilities.urls import url_for
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings
from prefect_dbt.core import _tracker as dbt_node_tracker
from prefect_dbt.core import runner as dbt_runner
from prefect_dbt.utilities import format_resource_id

from core import alerts, dbt, kit, lineage, settings, warehouse
from core.ingestion import ConfigError, load_config, parse_partition, window
from core.kit import progress
from core.pipeline import ingest
from core.source import MalformedRecordError
from core.warehouse import WarehouseBusyError
from orchestrators.prefect import NAME, TOKEN_BLOCK, WAREHOUSE_LIMIT

#: Prefect's API refuses concurrency leases shorter than a minute
MIN_LEASE_SECONDS = 60
#: how long the transformation flow waits, after ``dbt build`` returned, for the dbt nodes' task
#: runs to report their final state (each has only its last API calls left by then)
NODE_TASK_RUNS_GRACE_SECONDS = 30


def alert_on_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_failure hook: one alert per failed top-level run (a failed subflow fails its parent)."""
    if flow_run.parent_task_run_id is not None:
        return
    payload = alerts.alert_payload(
        NAME, flow.name, str(flow_run.id), state.message or str(state.type), url_for(flow_run)
    )
    alerts.send_alert(payload)


def release_stale_slots(say=print) -> int:
    """Free the warehouse slots no live writer holds; returns how many (0 when none were stale).

    A run killed with SIGKILL leaves its slot occupied. On a long-lived server the slot's lease
    expires (it is renewed only while its holder lives) and Prefect's repossessor frees it; but a
    lease kept in memory is gone when its server stops (the ephemeral server of a dev run, a
    restarted ``prefect server start``), and then nothing would ever free the slot. Every holder
    of the slot also holds the warehouse's writer lock, which the kernel releases when its process
    dies: when that lock is free, every occupied slot belongs to a dead run.

    A warehouse that admits parallel writers (PostgreSQL) has no such lock (``writer_lock`` is a
    no-op there), so nothing proves a holder dead: its slots are left to their leases.
    """
    location = settings.for_pipeline(NAME, export=False).location
    if warehouse.allows_parallel_writers(location):
        return 0
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(WAREHOUSE_LIMIT)
        if not limit.active_slots:
            return 0
        try:
            with warehouse.writer_lock(location, timeout=0, purpose=f"{NAME} slot check"):
                client.update_global_concurrency_limit(
                    WAREHOUSE_LIMIT, GlobalConcurrencyLimitUpdate(active_slots=0)
                )
        except WarehouseBusyError:  # a live writer: its slot is not stale
            return 0
    say(
        f"[{NAME}] released {limit.active_slots} warehouse slot(s) of {WAREHOUSE_LIMIT} left "
        "occupied by a run that died (killed before it could give them back)"
    )
    return limit.active_slots


def writer_slots() -> int:
    """The size of the warehouse's writer limit: one slot per ingestion unit where the warehouse
    admits parallel writers (PostgreSQL), else one (DuckDB: one writer per file)."""
    location = settings.for_pipeline(NAME, export=False).location
    return len(load_config().resources) if warehouse.allows_parallel_writers(location) else 1


def writer_slot(occupy: int = 1):
    """``occupy`` slots of the warehouse's writer limit; waits up to QUARTET_LOCK_TIMEOUT, then
    fails clearly.

    Its lease lasts ``heartbeat_seconds`` (at least Prefect's minimum) and is renewed while the
    holder lives: a holder killed mid-run loses it that long after, freed by the server.
    """
    return concurrency(
        WAREHOUSE_LIMIT,
        occupy=occupy,
        timeout_seconds=warehouse.lock_timeout(),
        lease_duration=max(MIN_LEASE_SECONDS, kit.policy().heartbeat_seconds),
        strict=True,
    )


def source_url() -> str:
    url = os.environ.get(settings.SOURCE_API_URL_ENV)
    if not url:
        raise ConfigError(
            f"{settings.SOURCE_API_URL_ENV} is not set: start the flows through "
            "`quartet run prefect` (which starts the source API), a deployment, or export it"
        )
    return url


def raw_asset(resource: str) -> Asset:
    """The raw table's asset, keyed as prefect-dbt keys the dbt source that reads it (the dbt
    adapter, and the relation's database: the DuckDB file's stem or the PostgreSQL database)."""
    pipeline = settings.for_pipeline(NAME, export=False)
    adapter, database = "duckdb", pipeline.warehouse.stem
    if pipeline.warehouse_url:
        adapter, database = "postgres", urlsplit(pipeline.warehouse_url).path.strip("/")
    relation = f'"{database}"."{settings.RAW_SCHEMA}"."{resource}"'
    return Asset(
        key=format_resource_id(adapter, relation),
        properties=AssetProperties(
            name=f"{database}.{settings.RAW_SCHEMA}.{resource}",
            description=f"Revisions of `{resource}` loaded by dlt from the flights source API.",
        ),
    )


#: the logger of the unit lines: to the run's log on the server only (see :func:`unit_done`)
UNITS_LOGGER = "quartet.units"


def _units_logger() -> logging.Logger:
    logger = logging.getLogger(UNITS_LOGGER)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())  # it finds the flow or task run in the run context
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def unit_done(line: str) -> None:
    """A unit's progress line: once on this process's stdout, and in the run's log on the server
    (where ``quartet run prefect --deployed`` reads it and the UI shows it).

    Not through ``get_run_logger()``: its records also reach Prefect's console handler, and the
    line came out twice wherever that handler writes to the same terminal (``quartet ui``, the
    flow-run processes it serves).
    """
    print(line, flush=True)
    _units_logger().info(line)


def ingest_resource(resource: str, as_of: str | None, partition: str | None) -> dict[str, int]:
    """Load one resource's window (the body of each ``ingest <resource>`` task)."""
    config = load_config()
    run_window = window(config, as_of=as_of, partition=partition, resources=(resource,))
    token = Secret.load(TOKEN_BLOCK).get()
    logger = get_run_logger()
    with writer_slot():
        result = ingest(
            NAME, run_window, base_url=source_url(), token=token, config=config, log=logger.info
        )
    unit = f"{resource} {partition or ''}".strip()
    new = progress.rows(result.new_rows[resource], new=True)
    unit_done(progress.unit_line(NAME, "ingest", unit, result.seconds, new))
    return {"fetched": result.rows_fetched[resource], "new": result.new_rows[resource]}


def _causes(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


#: errors a retry cannot fix: a broken record, a wrong setting, a failing dbt node, a busy
#: warehouse (the run already waited QUARTET_LOCK_TIMEOUT), a missing module
PERMANENT = (
    ConfigError,
    MalformedRecordError,
    dbt.DbtBuildError,
    WarehouseBusyError,
    TimeoutError,
    ImportError,
)


def is_permanent(exc: BaseException) -> bool:
    """True when no retry can fix ``exc`` (or what caused it): also a token the API rejected."""
    return any(isinstance(e, PERMANENT) or "401" in str(e) for e in _causes(exc))


def worth_retrying(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect's retry_condition_fn: retry only what may pass next time (API faults that outlived
    dlt's own HTTP retries, a lost connection)."""
    try:
        state.result()
    except Exception as exc:
        return not is_permanent(exc)
    return True


def ingest_task(resource: str) -> MaterializingTask:
    """The task of one resource: it materializes ``raw.<resource>``; retried (policy) for
    transient faults only, on top of dlt's own HTTP retries."""
    policy = kit.policy()
    return materialize(
        raw_asset(resource),
        by="dlt",
        name=f"ingest-{resource}",
        task_run_name=f"ingest {resource}",
        retries=policy.unit_retries,
        retry_delay_seconds=policy.retry_delays(),
        retry_jitter_factor=0.2,
        retry_condition_fn=worth_retrying,
        cache_policy=NO_CACHE,
    )(ingest_resource)


def _as_of(value: dt.date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else value


@flow(name="quartet-ingestion", on_failure=[alert_on_failure])
def ingestion(
    as_of: dt.date | None = None, partition: str | None = None, resources: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Load one window from the source API into the raw schema: one task run per resource."""
    config = load_config()
    run_window = window(  # validates the parameters before anything runs
        config, as_of=_as_of(as_of), partition=partition, resources=tuple(resources or ())
    )
    tasks = {resource: ingest_task(resource) for resource in run_window.resources}
    location = settings.for_pipeline(NAME, export=False).location
    if not warehouse.allows_parallel_writers(location):
        # One after another: they share the warehouse's one writer slot anyway, and tasks
        # submitted at once would wait for it with the concurrency client's backoff (~9 s idle
        # per full run).
        return {r: task(r, run_window.as_of, partition) for r, task in tasks.items()}
    # Every unit at once on the flow's thread pool (the limit has a slot per unit); all of them
    # finish before the flow reports a failed one, so no unit outlives its flow run.
    futures = {r: task.submit(r, run_window.as_of, partition) for r, task in tasks.items()}
    wait(list(futures.values()))
    return {r: future.result() for r, future in futures.items()}


def dbt_settings(pipeline: settings.PipelineSettings) -> PrefectDbtSettings:
    """transform/ with this pipeline's target dir. The log level is explicit: prefect-dbt 0.7
    derives it from Prefect's, and PREFECT_LOGGING_LEVEL=WARNING is no dbt level ("warn")."""
    return PrefectDbtSettings(
        project_dir=settings.TRANSFORM_DIR,
        profiles_dir=settings.TRANSFORM_DIR,
        target_path=pipeline.dbt_target_dir,
        log_level=EventLevel.INFO,
    )


@contextlib.contextmanager
def node_task_runs_share_flow_context():
    """Run prefect-dbt's per-node task runs on the flow run's settings and API client.

    prefect-dbt 0.7 runs each dbt node's task run on a thread of its own, which rebuilds Prefect's
    context from a serialized copy: two new ``Settings`` objects (pydantic-settings reads the
    environment, ``.env`` and TOML sources for each of ~60 nested models: ~20 ms of CPU each) and
    three new API clients (each loads certifi's CA bundle: ~14 ms), for every one of the 54
    nodes, while dbt's thread waits for the GIL. Prefect's own ``ThreadPoolTaskRunner`` runs
    task threads in a copy of the flow thread's context instead, so they share its settings and
    its client. This gives the node threads the same, by replacing two names prefect-dbt imported
    (``runner.serialize_context``, ``_tracker.hydrated_context``) for the build's duration:

    * the serialized context leaves out the settings when they are the process's global ones, so
      each thread falls back to that very object (what an unserialized thread sees anyway);
    * each node thread starts with the flow thread's ``SyncClientContext``, and so every
      ``get_client(sync_client=True)`` in it returns the flow run's client (httpx clients are
      thread-safe; Prefect's task threads share it the same way).

    Still one task run per node, with the same states, logs, assets and upstream edges. The node
    threads are joined before the block ends (each has at most its last API calls left), so no
    node's task run outlives the client it uses. ADR 0008 has the figures.
    """
    flow_clients = SyncClientContext.get()
    node_threads: list[threading.Thread] = []
    serialize_context, hydrated_context = (
        dbt_runner.serialize_context,
        dbt_node_tracker.hydrated_context,
    )

    def serialize_without_global_settings(*args, **kwargs):
        serialized = serialize_context(*args, **kwargs)
        if SettingsContext.get() is prefect.context.GLOBAL_SETTINGS_CONTEXT:
            serialized["settings_context"] = {}
        return serialized

    @contextlib.contextmanager
    def hydrated_with_flow_client(serialized):
        node_threads.append(threading.current_thread())
        SyncClientContext.__var__.set(flow_clients)  # this thread's own context, new and empty
        with hydrated_context(serialized, client=flow_clients.client):
            yield

    if flow_clients is None:  # not in a flow run: prefect-dbt's own way
        yield
        return
    dbt_runner.serialize_context = serialize_without_global_settings
    dbt_node_tracker.hydrated_context = hydrated_with_flow_client
    try:
        yield
    finally:
        dbt_runner.serialize_context = serialize_context
        dbt_node_tracker.hydrated_context = hydrated_context
        deadline = time.monotonic() + NODE_TASK_RUNS_GRACE_SECONDS
        for thread in list(node_threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _report_models(results) -> None:
    """One progress line per model with its rows and how many of its tests passed."""
    graph = lineage.canonical()
    by_name = {r.node.name: r for r in results}
    for model in graph.order():
        result = by_name.get(model)
        if result is None:
            continue
        tests = [by_name[t] for t in graph.tests.get(model, ()) if t in by_name]
        passed = sum(str(t.status) == "pass" for t in tests)
        rows = (result.adapter_response or {}).get("rows_affected")
        detail = ", ".join(
            p
            for p in (progress.rows(rows), progress.tests_summary(passed, len(tests) - passed))
            if p
        )
        seconds = result.execution_time or 0.0
        unit_done(progress.unit_line(NAME, "dbt", model, seconds, detail))


@flow(name="quartet-transformation", on_failure=[alert_on_failure])
def transformation(select: list[str] | None = None) -> dict[str, int]:
    """``dbt build`` (models, data tests, unit tests in DAG order): one task run per dbt node."""
    pipeline = settings.for_pipeline(NAME)  # exports QUARTET_WAREHOUSE for profiles.yml
    dbt.prepare_manifest()
    dbt.seed_partial_parse(pipeline.dbt_target_dir)  # start from the prepared parse
    runner = PrefectDbtRunner(settings=dbt_settings(pipeline), raise_on_failure=False)
    args = ["build", "--log-path", str(pipeline.dbt_log_dir)]
    if select:
        args += ["--select", *select]
    # every slot: no ingestion unit writes while dbt builds
    with (
        writer_slot(occupy=writer_slots()),
        warehouse.writer_lock(pipeline.location, purpose=f"{NAME} dbt build"),
        node_task_runs_share_flow_context(),
    ):
        try:
            result = runner.invoke(args)
        finally:
            dbt.release_warehouse()  # dbt-duckdb keeps the file open (a no-op on PostgreSQL)
    if not result.success:
        run_results = pipeline.dbt_target_dir / "run_results.json"
        failures = []
        with contextlib.suppress(OSError, ValueError):
            failures = dbt.failures_from_run_results(json.loads(run_results.read_text()))
        raise dbt.DbtBuildError(
            dbt.failure_report(failures, f"see {pipeline.dbt_log_dir}"), failures
        ) from result.exception
    _report_models(result.result.results)
    statuses = [str(r.status) for r in result.result.results]
    return {status: statuses.count(status) for status in sorted(set(statuses))}


def _ingest_then_build(as_of: dt.date | str | None, partitions: list[str] | None) -> dict:
    config = load_config()
    for partition in partitions or []:
        window(config, as_of=_as_of(as_of), partition=partition)  # fail before any run
    # a rerun of a run that was killed (by hand, or the crash automation's) does not wait for
    # the dead run's lease to expire
    release_stale_slots(say=get_run_logger().warning)
    ingested = {}
    for partition in partitions or [None]:
        label = partition or "latest"
        ingested[label] = ingestion.with_options(flow_run_name=f"ingestion {label}")(
            as_of=as_of, partition=partition
        )
    # the coordination point: dbt starts once every ingestion subflow has completed
    built = transformation()
    return {"ingested": ingested, "dbt": built}


@flow(name="quartet-pipeline", on_failure=[alert_on_failure])
def pipeline(as_of: dt.date | None = None, partitions: list[str] | None = None) -> dict:
    """Ingest, then build dbt. With partitions (a backfill): one ingestion subflow per month in
    the order given, then one dbt build over all of them."""
    return _ingest_then_build(as_of, partitions)


def month_range(start: str, end: str) -> list[str]:
    """``2013-01``..``2013-03`` -> the months in between, both ends included."""
    (year, month), last = parse_partition(start), parse_partition(end)
    months = []
    while (year, month) <= last:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    if not months:
        raise ConfigError(f"backfill range {start}..{end} holds no month")
    return months


@flow(name="quartet-backfill", on_failure=[alert_on_failure])
def backfill(start: str, end: str, as_of: dt.date | None = None) -> dict:
    """A range of months as one flow run: an ingestion subflow per month, then one dbt build."""
    return _ingest_then_build(as_of, month_range(start, end))
