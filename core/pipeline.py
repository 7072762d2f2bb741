"""The pipeline every orchestrator runs: ingest (dlt) then transform (dbt build).

Orchestrators call :func:`ingest` once per resource (their ingestion unit) and :func:`transform`
once or per dbt node; the bare run (:func:`run`) ingests in its own process and builds in a dbt
process it starts first (ADR 0020). Both take the warehouse's writer lock, so two writers never
meet on one DuckDB file.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dlt
from dlt.common.runtime.collector import Collector
from dlt.pipeline.exceptions import PipelineStepFailed

from core import dbt, failures, project, settings, warehouse
from core.failures import IngestionError
from core.ingestion import IngestionConfig, RunWindow, load_config, window

Log = Callable[[str], None]


def parallel_ingestion() -> bool:
    """QUARTET_PARALLEL_INGESTION=0 makes the bare run ingest one unit at a time even where the
    warehouse allows parallel writers (to measure what the parallelism buys)."""
    return os.environ.get("QUARTET_PARALLEL_INGESTION", "1") != "0"


@dataclass
class IngestResult:
    pipeline: str
    window: RunWindow
    rows_fetched: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [
            f"{table} {self.new_rows.get(table, 0):+,} ({self.rows_fetched.get(table, 0):,} fetched)"
            for table in sorted(set(self.rows_fetched) | set(self.new_rows))
        ]
        return ", ".join(parts) or "nothing new"


def _print(message: str) -> None:
    print(message, flush=True)


#: ``RESOURCE:STEP`` (STEP: extract, normalize or load): the reliability matrix's kill point
#: inside one of dlt's steps (lab/reliability.py sets it for the one run it kills; ADR 0017)
PAUSE_ENV = "QUARTET_PAUSE_AT"
PAUSE_STEPS = ("extract", "normalize", "load")
#: a paused process nobody killed gives up (the matrix kills within a second of the marker)
PAUSE_SECONDS = 600


def pause_marker(resource: str, step: str, home: Path | None = None) -> Path:
    """The file a process paused at ``resource:step`` writes (in its QUARTET_HOME)."""
    return (home or settings.home()) / f"paused-at-{resource}-{step}"


class PausePoint(Collector):
    """Stops the process inside one of dlt's steps, deterministically, for a kill -9 there.

    dlt reports each step's progress to the pipeline's collector (``dlt.pipeline(progress=)``),
    from the process that runs the step. The pause comes at the first progress that proves the
    step is under way and unfinished: in extract, the resource's first page written to the
    package being extracted; in normalize, the first file normalized, before the package is
    committed; in load, the first job loaded, before the package is complete. There the process
    writes :func:`pause_marker` and sleeps; the matrix sees the marker and kills the whole tree.
    """

    def __init__(self, resource: str, step: str) -> None:
        self.resource, self.pause_step = resource, step
        self.step = ""

    def update(self, name, inc=1, total=None, inc_total=None, message=None, label=None) -> None:
        progressed = {
            "extract": self.step.startswith("Extract") and name == self.resource,
            "normalize": self.step.startswith("Normalize") and name == "Files",
            "load": self.step.startswith("Load") and name == "Jobs" and not label,
        }[self.pause_step]
        if progressed and inc > 0:
            marker = pause_marker(self.resource, self.pause_step)
            marker.write_text(f"pid {os.getpid()}: {self.step}\n")
            time.sleep(PAUSE_SECONDS)
            raise RuntimeError(f"{PAUSE_ENV}: paused {PAUSE_SECONDS}s at {marker}, never killed")

    def _start(self, step: str) -> None:
        pass

    def _stop(self) -> None:
        pass


def pause_point(resources: Sequence[str]) -> PausePoint | None:
    """The pause point ``QUARTET_PAUSE_AT`` asks for, if this load includes its resource; None
    (dlt's default: no collector) when the variable is unset, which is every run but the
    matrix's."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return None
    resource, _, step = wanted.partition(":")
    if step not in PAUSE_STEPS:
        raise ValueError(f"{PAUSE_ENV}={wanted!r}: expected RESOURCE:{'|'.join(PAUSE_STEPS)}")
    return PausePoint(resource, step) if resource in resources else None


def dlt_pipeline(
    pipeline: settings.PipelineSettings,
    unit: str | None = None,
    progress: Collector | None = None,
) -> dlt.Pipeline:
    """The dlt pipeline of a named run: its own name and working dir, the shared warehouse path.

    On PostgreSQL (``pipeline.warehouse_url``), ``unit`` names a concurrent ingestion unit (one
    resource): it gets a dlt pipeline (name, working dir, state) of its own, so units can run at
    once; DuckDB runs keep one dlt pipeline per run name. ``progress``: dlt's collector (only the
    reliability matrix's :class:`PausePoint`).
    """
    if pipeline.warehouse_url:
        from urllib.parse import urlsplit

        suffix = f"_{unit}" if unit else ""
        parts = urlsplit(pipeline.warehouse_url)  # one working dir per database: no stale cursor
        where = f"{parts.hostname}_{parts.port or 5432}_{parts.path.strip('/')}"
        return dlt.pipeline(
            pipeline_name=pipeline.pipeline_name + suffix,
            pipelines_dir=str(pipeline.pipelines_dir / f"postgres_{where}{suffix}"),
            destination=dlt.destinations.postgres(credentials=pipeline.warehouse_url),
            dataset_name=settings.RAW_SCHEMA,
            progress=progress,
        )
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    # DuckDB's buffer pool otherwise grows to 80% of RAM while loading a big year
    memory = {"memory_limit": load_config().duckdb_memory_limit}
    return dlt.pipeline(
        pipeline_name=pipeline.pipeline_name,
        pipelines_dir=str(pipeline.pipelines_dir),
        destination=dlt.destinations.duckdb(
            DuckDbCredentials(str(pipeline.warehouse), global_config=memory)
        ),
        dataset_name=settings.RAW_SCHEMA,
        progress=progress,
    )


def settle_pending(
    p: dlt.Pipeline, pipeline: settings.PipelineSettings, *, log: Log
) -> dlt.Pipeline:
    """Leave dlt's working folder as a clean run expects it; say what was done, never silently.

    A run that was killed or failed can leave two things behind in the working folder, and
    either would make the next run lie:

    * load packages that were extracted but not loaded. dlt's ``run`` would load them *instead*
      of extracting what it was asked for ("the data you passed will not be extracted"). They
      are finished here (normalize + load: their rows are real source revisions and the raw
      layer merges idempotently); a package that fails again (e.g. a malformed record) is
      discarded together with the local state, which dlt then restores from the warehouse, so
      the cursor never claims data the warehouse does not hold.
    * local state for a DuckDB warehouse that is gone (deleted to start over): the incremental
      cursor would skip everything already seen. The working folder is reset: the run loads all.
    """
    working = Path(p.working_dir)
    if not (working / "state.json").exists():  # never extracted: nothing left behind
        return p
    if not pipeline.warehouse_url and not pipeline.warehouse.exists():
        log(f"[{pipeline.name}] the warehouse is gone: resetting dlt's state in {working}")
        return p.drop()
    if (
        pipeline.warehouse_url
        and not p.first_run
        and not warehouse.table_counts(pipeline.warehouse_url, (settings.RAW_SCHEMA,))
    ):
        log(f"[{pipeline.name}] the raw schema is gone: resetting dlt's state in {working}")
        return p.drop()
    if not p.has_pending_data:
        return p
    packages = [*p.list_extracted_load_packages(), *p.list_normalized_load_packages()]
    try:
        p.normalize()
        p.load()
    except Exception as exc:
        reason = " ".join(str(failures.root_cause(exc, skip_remote=True)).split())
        log(
            f"[{pipeline.name}] discarded {len(packages)} load package(s) an earlier run left "
            f"unfinished ({', '.join(packages)}): they fail again ({reason[:300]}); "
            "dlt's state is reset to what the warehouse holds"
        )
        return p.drop()
    log(
        f"[{pipeline.name}] finished {len(packages)} load package(s) an earlier run left unfinished"
    )
    return p


def _run_dlt(p: dlt.Pipeline, source, loader_file_format: str) -> None:
    """``p.run``; when concurrent units race to create the same tables in a fresh PostgreSQL
    dataset (dlt's own tables), the load step is retried: dlt re-reads the destination and
    applies only what is missing (dlt.pipeline.helpers.retry_schema_update)."""
    from dlt.pipeline.helpers import retry_schema_update

    schema_race = retry_schema_update()
    try:
        p.run(source, loader_file_format=loader_file_format)
        return
    except PipelineStepFailed as exc:
        if not schema_race(exc):
            raise
    for attempt in range(1, 5):
        time.sleep(0.2 * attempt)
        try:
            p.load()
            return
        except PipelineStepFailed as exc:
            if not schema_race(exc) or attempt == 4:
                raise


def _what_was_loaded(location, before: dict[str, int]) -> str:
    """What a failed run still loaded: dlt loads each table of a package in its own transaction,
    so a load step that fails part-way (a full disk, a lost connection) may have committed some
    tables; the rest of the package stays pending and the next run finishes it."""
    try:
        after = warehouse.table_counts(location, (settings.RAW_SCHEMA,))
    except Exception:  # the warehouse itself may be what failed: say nothing we cannot check
        return "What this step loaded could not be checked."
    loaded = {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}
    if not loaded:
        return "Nothing of this step was loaded."
    tables = ", ".join(f"{table} {rows:+,} rows" for table, rows in sorted(loaded.items()))
    return (
        f"Loaded before the failure: {tables}; the rest of the package stays pending, and the "
        "next run loads it first."
    )


def source_for(
    run_window: RunWindow, *, base_url: str | None, token: str | None, config: IngestionConfig
):
    """The project's dlt source for one window (its factory, core.project.SourceFactory)."""
    return project.source(
        project.SourceRequest(
            project=project.current(),
            resources=run_window.resources,
            since=run_window.since,
            until=run_window.until,
            partition=run_window.partition,
            as_of=run_window.as_of,
            base_url=base_url,
            token=token,
            page_size=config.page_size,
        )
    )


def ingest(
    name: str,
    run_window: RunWindow,
    *,
    base_url: str,
    token: str,
    config: IngestionConfig | None = None,
    log: Log = _print,
) -> IngestResult:
    """Load ``run_window`` from the API into ``warehouse/<name>.duckdb`` (raw schema), or into
    the PostgreSQL warehouse when ``QUARTET_WAREHOUSE_URL`` is set."""
    config = config or load_config()
    pipeline = settings.for_pipeline(name)
    location = pipeline.location
    concurrent = warehouse.allows_parallel_writers(location)
    os.environ.update(config.runtime_env(run_window.resources, concurrent_units=concurrent))
    result = IngestResult(pipeline=name, window=run_window)
    started = time.perf_counter()
    unit = run_window.resources[0] if len(run_window.resources) == 1 else None
    with warehouse.writer_lock(location, purpose=f"{name} ingest"):
        warehouse.check_connection(location)
        before = warehouse.table_counts(location, (settings.RAW_SCHEMA,))
        source = source_for(run_window, base_url=base_url, token=token, config=config)
        progress = pause_point(run_window.resources)
        p = settle_pending(dlt_pipeline(pipeline, unit, progress), pipeline, log=log)
        try:
            _run_dlt(p, source, warehouse.loader_file_format(location, config.loader_file_format))
        except PipelineStepFailed as exc:
            cause = failures.root_cause(exc)
            hint = ""
            if "401" in str(cause):
                hint = f" (the API rejected the token: check {settings.SOURCE_API_TOKEN_ENV})"
            elif isinstance(cause, ConnectionError | OSError) and "refused" in str(cause).lower():
                hint = f" (the source API at {base_url} is unreachable: check {settings.SOURCE_API_URL_ENV})"
            raise IngestionError(
                f"ingesting {', '.join(run_window.resources)} from {base_url} into "
                f"{_shown(location)} failed at the {exc.step} step{hint}: "
                f"{type(cause).__name__}: {cause}. {_what_was_loaded(location, before)}"
            ) from exc
        after = warehouse.table_counts(location, (settings.RAW_SCHEMA,))
    trace = p.last_trace
    normalized = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    for resource in run_window.resources:
        key = f"{settings.RAW_SCHEMA}.{resource}"
        result.rows_fetched[resource] = int(normalized.get(resource, 0))
        result.new_rows[resource] = after.get(key, 0) - before.get(key, 0)
    result.seconds = time.perf_counter() - started
    log(f"[{name}] ingest {_describe(run_window)}: {result.summary()} in {result.seconds:.1f}s")
    return result


def transform(
    name: str,
    *,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    log: Log = _print,
) -> dbt.BuildResult:
    """``dbt build`` (models and tests) on ``warehouse/<name>.duckdb``; raises on any failure."""
    from core.kit.progress import DbtUnits

    pipeline = settings.for_pipeline(name)
    units = DbtUnits(name, dbt.load_manifest(), log)
    with warehouse.writer_lock(pipeline.location, purpose=f"{name} dbt build"):
        try:
            result = dbt.build(pipeline, select=select, exclude=exclude, on_node=units)
        finally:
            units.flush()
    log(
        f"[{name}] dbt build: {result.count('success')} models ok, {result.count('pass')} tests "
        f"passed in {result.seconds:.1f}s"
    )
    return result


def _shown(location: warehouse.Location) -> str:
    if isinstance(location, str):
        return warehouse.mask(location)
    return str(settings.shown_path(location))


def _ingest_units(
    name: str,
    run_window: RunWindow,
    *,
    base_url: str,
    token: str,
    config: IngestionConfig,
    log: Log,
    parallel: bool,
) -> list[IngestResult]:
    """One window: on DuckDB one load of every resource; on PostgreSQL one ingestion unit per
    resource, all at once when ``parallel`` (threads: the work is HTTP, JSON and COPY)."""
    if not settings.warehouse_url():
        return [ingest(name, run_window, base_url=base_url, token=token, config=config, log=log)]
    from concurrent.futures import ThreadPoolExecutor

    workers = len(run_window.resources) if parallel else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                ingest,
                name,
                run_window.only(resource),
                base_url=base_url,
                token=token,
                config=config,
                log=log,
            )
            for resource in run_window.resources
        ]
        return [future.result() for future in futures]


def _describe(run_window: RunWindow) -> str:
    parts = []
    if run_window.partition:
        parts.append(f"partition {run_window.partition}")
    if project.current().clock:
        parts.append(f"as of {run_window.as_of}" if run_window.as_of else "as of latest")
    return ", ".join(parts) or "everything new"


class _DbtProcess:
    """The bare run's dbt builds, in a process of their own that gets ready while it ingests.

    The process imports dbt and parses the project (:func:`core.dbt.warm_up`) while this one
    starts the API and ingests, then runs :func:`transform` each time it is asked and sends back
    its log lines and its result, or its error. Two processes, because one would serialize the
    two: dbt's import and first parse are pure Python, and on a thread of this process they
    waited for the GIL that ingestion's Python holds, so a thread saved nothing (ADR 0020; the
    figures in docs/benchmarks.md). Spawned, not forked: this process may have threads by then.
    """

    def __init__(self, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_dbt_process, args=(name, child), name="dbt")
        self.process.start()
        child.close()

    def transform(self, log: Log) -> dbt.BuildResult:
        self.conn.send(True)
        while True:
            try:
                kind, value = self.conn.recv()
            except EOFError:
                self.process.join()
                raise RuntimeError(
                    f"the dbt process ended during the build (exit code {self.process.exitcode})"
                ) from None
            if kind == "log":
                log(value)
            elif kind == "error":
                raise value
            else:
                return value

    def close(self) -> None:
        with contextlib.suppress(OSError):  # it may be gone already
            self.conn.send(False)
        self.process.join(timeout=10)
        if self.process.is_alive():  # interrupted mid-build: it is not listening
            self.process.terminate()
            self.process.join()
        self.conn.close()


def _dbt_process(name: str, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle (close())
    with contextlib.suppress(Exception):  # the build parses again and reports what failed
        dbt.warm_up(settings.for_pipeline(name))
    while conn.recv():
        try:
            conn.send(("done", transform(name, log=lambda line: conn.send(("log", line)))))
        except Exception as exc:
            conn.send(("error", exc))
    from core.kit import exit_process  # the parent waits for this end: no teardown

    exit_process(0)


def run(
    name: str = "bare",
    *,
    as_of: str | None = None,
    partitions: Sequence[str] | None = None,
    resources: tuple[str, ...] | None = None,
    log: Log = _print,
) -> list[IngestResult]:
    """The plain end-to-end run: start the API if needed, ingest, build dbt (tests included)."""
    from core.source_service import SourceAPIConfig, running_source_api

    config = load_config()
    windows = [
        window(config, as_of=as_of, partition=p, resources=resources) for p in partitions or [None]
    ]
    api_config = SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )
    results = []
    started = time.perf_counter()
    location = settings.for_pipeline(name).location
    warehouse.check_connection(location)  # a wrong URL fails before the API even starts
    dbt.prepare_manifest()  # a dbt project that does not parse fails now, before any load
    log(f"[{name}] run: {project.current().describe_run(partitions, as_of)} -> {_shown(location)}")
    parallel = warehouse.allows_parallel_writers(location) and parallel_ingestion()
    builds = _DbtProcess(name)
    try:
        with contextlib.ExitStack() as api:
            url, token = api.enter_context(running_source_api(api_config))
            for run_window in windows:
                results += _ingest_units(
                    name, run_window, base_url=url, token=token, config=config, log=log,
                    parallel=parallel,
                )  # fmt: skip
                if run_window is windows[-1]:
                    api.close()  # not needed by the last build (a large share of the peak memory)
                builds.transform(log)
    finally:
        builds.close()
    log(f"[{name}] done in {time.perf_counter() - started:.1f}s -> {_shown(location)}")
    return results
