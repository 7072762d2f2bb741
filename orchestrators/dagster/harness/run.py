"""``quartet run dagster``: the ``full_pipeline`` job in process, Dagster's local-testing path.

The run executes on the persistent dev-mode instance under ``.quartet/dagster/home`` (no
webserver, no daemon), so ``quartet ui dagster`` later shows it. Without ``--partition`` one run
covers the whole range (a single-run backfill, like bare's full load); each ``--partition`` is a
run of that partition, in the order given. A project without partitions runs unpartitioned:
one run, no partition tags, loading whatever is new.

The terminal gets a header, one line per unit (an ingestion resource, a dbt model with its
tests: data tests as Dagster asset checks plus dbt unit tests) and a result line; Dagster's event
log and whatever the run writes to stdout (dagster-dbt echoes dbt's own log there) go to
``.quartet/dagster/logs/run.log``. The dev-mode instance's ``dagster.yaml`` is written here
(``dagster_home``). Each run is created with the code location's remote origin,
as ``dagster dev`` names it, so the UI's Overview timeline (which leaves out runs without one)
shows it beside the runs the UI launches. On a warehouse that admits parallel
writers (PostgreSQL) the job's executor runs each step in a process of its own
(``definitions.py``), so the run goes through ``execute_job`` and its progress is read from the
run's event log. Before running, runs that a killed
process left STARTED are marked failed and their pool slots freed: otherwise the next run would
wait forever for the warehouse pool's only slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

import dagster as dg

from core import kit, settings
from core.kit import RunFailed, RunRequest, progress
from core.kit.service import process_start_time
from orchestrators.dagster import levers
from orchestrators.dagster.partitions import PARTITIONS, WHOLE_RANGE
from orchestrators.dagster.project import (
    NAME,
    PARALLEL_WRITERS,
    UNIT_TESTS_FAILED,
    UNIT_TESTS_PASSED,
    WAREHOUSE_POOL,
    WAREHOUSE_POOL_LIMIT,
)

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
PID_TAG, PID_START_TAG = "quartet/pid", "quartet/pid_started_at"
#: a tag naming one ``execute`` call: how its run is found when Dagster chooses the run id
INVOCATION_TAG = "quartet/invocation"
CHATTY_LOGGERS = ("dagster", "dlt", "dbt", "dagster_dbt", "dagster_dlt")
#: Dagster's console logger shows warnings and errors only; every event goes to the log file
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
UNFINISHED = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING)
#: the code location as ``dagster dev -m`` loads it (ui.py); its name is the module's
CODE_LOCATION_MODULE = "orchestrators.dagster.definitions"


def dagster_home() -> Path:
    """The dev-mode DAGSTER_HOME (SQLite storage) with its instance config for this warehouse.

    The config is rewritten when the warehouse's engine changed since the last run: the pool's
    limit follows it (Dagster moves a pool that uses the default limit to the new one).
    """
    home = kit.home(NAME)
    config = home / "dagster.yaml"
    why = "every ingestion unit at once" if PARALLEL_WRITERS else "one writer at a time on DuckDB"
    text = (
        "# Written by orchestrators/dagster/harness/run.py (generated state, gitignored)\n"
        "telemetry:\n  enabled: false\n"
        "nux:\n  enabled: false  # no 'Join the Dagster community' dialog over the UI\n"
        "concurrency:\n"
        "  pools:\n"
        f"    default_limit: {WAREHOUSE_POOL_LIMIT}  # {why}\n"
    )
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return home


def use_dagster_home() -> Path:
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def partition_tags(partitions: Iterable[str] = ()) -> dict[str, str]:
    """The tags of a run over ``partitions`` (one partition) or of the whole range (a single
    run); none for an unpartitioned project."""
    keys = list(partitions)
    if len(keys) == 1:
        return {"dagster/partition": keys[0]}
    if PARTITIONS is None:
        return {}
    keys = keys or PARTITIONS.get_partition_keys()
    return dict(zip(RANGE_TAGS, (keys[0], keys[-1]), strict=True))


def run_worker_pid(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> tuple[int, int | None] | None:
    """The process executing ``run`` and its start time (None: not known yet).

    A dev-mode run records it in its tags; a launched run's worker says it in the event log
    (``Executing steps in process (pid: N)``, from the in-process executor).
    """
    if PID_TAG in run.tags:
        return int(run.tags[PID_TAG]), int(run.tags.get(PID_START_TAG) or -1)
    engine_events = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
    ).records
    for record in engine_events:
        found = re.search(
            r"Executing steps in process \(pid: (\d+)\)", record.event_log_entry.user_message or ""
        )
        if found:
            return int(found.group(1)), None
    return None


def release_dead_runs(instance: dg.DagsterInstance, say: Callable[[str], None]) -> list[str]:
    """Mark failed the runs whose worker process is gone, and free their pool slots.

    A run still STARTED whose process no longer exists was killed (kill -9, a crash, its code
    server stopped) and would hold the ``quartet_warehouse`` slot forever: the next run would
    wait for it without a word.
    """
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(UNFINISHED))):
        worker = run_worker_pid(instance, run)
        if worker is None:
            continue  # not started far enough to tell
        pid, started_at = worker
        alive = process_start_time(pid)
        if alive is not None and (started_at is None or alive == started_at):
            continue  # still running
        instance.report_run_failed(
            run, f"its process {pid} is gone (killed); marked failed by the next quartet run"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        say(
            f"run {run.run_id} was left {run.status.value} by process {pid}, which is gone: "
            f"marked it failed and freed its {WAREHOUSE_POOL} slot"
        )
        released.append(run.run_id)
    return released


class Progress:
    """Dagster's event log as one line per unit: a dlt resource, a dbt model with its tests."""

    def __init__(self, checks_per_asset: dict[dg.AssetKey, int], say=print) -> None:
        self.checks_per_asset = checks_per_asset
        self.say = say
        self.step_started: dict[str, float] = {}
        self.ingested: dict[str, dict] = {}
        self.models: dict[dg.AssetKey, dict] = {}
        self.checks: dict[dg.AssetKey, list[bool]] = defaultdict(list)
        self.printed: set[dg.AssetKey] = set()

    def __call__(self, entry) -> None:
        event = entry.dagster_event
        if event is None:
            return
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            self.step_started[event.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            key = materialization.asset_key
            if key.path[0] == settings.RAW_SCHEMA:
                self.ingested[event.step_key] = metadata
            else:
                self.models[key] = metadata
                self._maybe_print(key)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            self.checks[evaluation.asset_key].append(evaluation.passed)
            self._maybe_print(evaluation.asset_key)
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            seconds = entry.timestamp - self.step_started.get(event.step_key, entry.timestamp)
            if event.step_key in self.ingested or event.step_key.startswith("ingest_"):
                metadata = self.ingested.get(event.step_key, {})
                failed = kind == dg.DagsterEventType.STEP_FAILURE
                detail = "FAILED" if failed else self._rows(metadata)
                unit = event.step_key.removeprefix("ingest_")
                self.say(progress.unit_line(NAME, "ingest", unit, seconds, detail))
            for key in list(self.models):  # the dbt step ended: whatever is left, as it stands
                self._print_model(key)

    @staticmethod
    def _rows(metadata: dict) -> str:
        new, fetched = metadata.get("new_rows"), metadata.get("rows_fetched")
        if new is None:
            return ""
        return f"{progress.rows(new, new=True)} ({progress.rows(fetched)} fetched)"

    def _maybe_print(self, key: dg.AssetKey) -> None:
        if key in self.models and len(self.checks[key]) >= self.checks_per_asset.get(key, 0):
            self._print_model(key)

    def _print_model(self, key: dg.AssetKey) -> None:
        if key in self.printed:
            return
        self.printed.add(key)
        metadata = self.models.pop(key, {})
        seconds = float(metadata.get("Execution Duration") or 0.0)
        rows = metadata.get("dagster/row_count") or metadata.get("rows_affected")
        checks = self.checks.get(key, [])
        # data tests are asset checks; unit tests are counted by the dbt asset (assets.py)
        passed = sum(checks) + int(metadata.get(UNIT_TESTS_PASSED) or 0)
        failed = len(checks) - sum(checks) + int(metadata.get(UNIT_TESTS_FAILED) or 0)
        detail = ", ".join(
            part
            for part in (
                progress.rows(rows) if isinstance(rows, int) else "",
                progress.tests_summary(passed, failed),
            )
            if part
        )
        self.say(progress.unit_line(NAME, "dbt", key.path[-1], seconds, detail))


def checks_per_asset(job: dg.JobDefinition) -> dict[dg.AssetKey, int]:
    counts: dict[dg.AssetKey, int] = defaultdict(int)
    for check in job.asset_layer.asset_graph.asset_check_keys:
        counts[check.asset_key] += 1
    return counts


def execute(
    *,
    as_of: str | None = None,
    partition: str | None = None,
    job_name: str = "full_pipeline",
    say: Callable[[str], None] | None = None,
):
    """One in-process run of ``job_name`` on the dev-mode instance; returns its result.

    Expects the source's URL and token in SOURCE_API_URL / SOURCE_API_TOKEN (the resources read
    them through EnvVar; empty for a source without an API). A failed run is alerted the way the daemon would: by evaluating
    the ``alert_on_run_failure`` sensor for it.
    """
    from orchestrators.dagster.automation import as_of_config
    from orchestrators.dagster.definitions import defs

    home = use_dagster_home()
    job = defs.resolve_job_def(job_name)
    tags = {
        **partition_tags([partition] if partition else []),
        PID_TAG: str(os.getpid()),
        PID_START_TAG: str(process_start_time(os.getpid())),
    }
    run_config = {**as_of_config(as_of), **QUIET_CONSOLE}
    with levers.sqlite_without_fsync(home), dg.DagsterInstance.get() as instance:
        release_dead_runs(instance, (lambda m: say(f"[{NAME}] {m}")) if say else (lambda _: None))
        listeners = [log_event]
        if say is not None:
            listeners.append(Progress(checks_per_asset(job), say))
        if PARALLEL_WRITERS:
            result = execute_in_step_processes(
                instance, job_name, run_config=run_config, tags=tags, listeners=listeners
            )
        else:
            # Dagster's private execute_run: the public execute_job creates the run without the
            # code location's origin, which the UI's timeline needs (ADR 0006). Harness only.
            from dagster._core.execution.api import execute_run

            # the job's in-process executor (definitions.py): every step in this process, so
            # the listeners hear each event as it is stored
            run = create_run(instance, job_name, run_config=run_config, tags=tags)
            for listener in listeners:
                instance.add_event_listener(run.run_id, listener)
            result = execute_run(reconstructable(job_name), run, instance, raise_on_error=False)
        if not result.success:
            alert(instance, result.run_id)
    return result


def reconstructable(job_name: str):
    """``job_name`` as a job another process (a step process, a re-execution) can rebuild."""
    return dg.build_reconstructable_job(
        CODE_LOCATION_MODULE, "job", reconstructable_args=(job_name,)
    )


def remote_origin(job_name: str):
    """Where the webserver finds ``job_name``: the code location ``dagster dev -m`` serves.

    A run created by ``execute_in_process`` or ``execute_job`` has none, and the UI's Overview
    timeline leaves such runs out (it places runs by their repository): the Runs page listed
    them while the Overview said "No runs".
    """
    from dagster._core.definitions.repository_definition.valid_definitions import (
        SINGLETON_REPOSITORY_NAME,
    )
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = ManagedGrpcPythonEnvCodeLocationOrigin(  # named after the module, as dagster dev
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=CODE_LOCATION_MODULE,
            working_directory=str(settings.REPO_ROOT),
        )
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)


def create_run(
    instance: dg.DagsterInstance, job_name: str, *, run_config: dict, tags: dict[str, str]
) -> dg.DagsterRun:
    """A run of ``job_name`` as ``dg.execute_job`` creates it, plus the remote origin."""
    recon = reconstructable(job_name)
    return instance.create_run_for_job(
        job_def=recon.get_definition(),
        run_config=run_config,
        tags=tags,
        job_code_origin=recon.get_python_origin(),
        remote_job_origin=remote_origin(job_name),
    )


@contextlib.contextmanager
def stdout_to(log: Path) -> Iterator[TextIO]:
    """Everything written to stdout (fd 1: this process and the step processes it starts) goes
    to ``log``; yields the terminal, for the progress lines.

    dagster-dbt echoes dbt's whole log to stdout (meant for a step's compute log, which a run
    in this process does not capture): here it joins Dagster's log instead of the terminal.
    """
    sys.stdout.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 1)
    os.close(log_fd)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        os.dup2(terminal.fileno(), 1)
        terminal.close()


def execute_in_step_processes(
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    run_config: dict,
    tags: dict[str, str],
    listeners: list[Callable],
):
    """One run of ``job_name`` with the job's multiprocess executor (``execute_job``).

    Each step writes its events from its own process, so this instance's event listeners never
    hear them: a thread follows the run's event log and hands every entry to ``listeners``.
    """
    invocation = str(uuid.uuid4())
    finished = threading.Event()

    def follow() -> None:
        run_id, cursor = None, None
        while True:
            last_look = finished.is_set()  # read once more after the run ended, then stop
            if run_id is None:
                found = instance.get_run_ids(dg.RunsFilter(tags={INVOCATION_TAG: invocation}))
                run_id = found[0] if found else None
            if run_id is not None:
                records = instance.get_records_for_run(run_id, cursor=cursor, limit=1000)
                for record in records.records:
                    for listener in listeners:
                        listener(record.event_log_entry)
                cursor = records.cursor
                if records.has_more:
                    continue
            if last_look:
                return
            finished.wait(0.5)

    follower = threading.Thread(target=follow, name="dagster-event-log", daemon=True)
    follower.start()
    try:
        from dagster._core.execution.api import execute_run

        run = create_run(
            instance, job_name, run_config=run_config, tags={**tags, INVOCATION_TAG: invocation}
        )
        # rebuilt by name in every step process (definitions.job); a failure is reported and
        # alerted by the caller
        return execute_run(reconstructable(job_name), run, instance, raise_on_error=False)
    finally:
        finished.set()
        follower.join()


def log_event(entry) -> None:
    """One event of the run in Dagster's log file (``orchestrator_log`` routes ``dagster``)."""
    event = entry.dagster_event
    kind = event.event_type_value if event else "LOG"
    logging.getLogger("dagster.events").log(
        entry.level if isinstance(entry.level, int) else logging.INFO,
        f"{entry.run_id} {entry.step_key or '-'} {kind} {entry.user_message or ''}".rstrip(),
    )


def alert(instance: dg.DagsterInstance, run_id: str) -> None:
    """Evaluate the run-failure sensor for a finished run (what the daemon does under ``ui``)."""
    from orchestrators.dagster.automation import alert_on_run_failure

    run = instance.get_run_by_id(run_id)
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    if not records:
        return
    context = dg.build_run_status_sensor_context(
        sensor_name=alert_on_run_failure.name,
        dagster_event=records[-1].event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    alert_on_run_failure(context)


def failure_summary(events: Iterable) -> str:
    """The failed steps of a run with their errors (a dbt failure in core's one wording)."""
    lines = []
    for event in events:
        if event.is_step_failure and event.step_failure_data.error:
            lines.append(f"{event.step_key}: {event.step_failure_data.error.message.strip()}")
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not lines and event.message:
            lines.append(event.message)
    return "\n".join(lines) or "the run failed"


def run(request: RunRequest) -> None:
    """``quartet run dagster [--as-of D] [--partition P ...]``: raises RunFailed on a failure."""
    say = lambda message: progress.say(NAME, message)  # noqa: E731
    log = progress.orchestrator_log(NAME, CHATTY_LOGGERS)
    levers.import_definitions_early(_import_definitions)
    warehouse = _shown(settings.for_pipeline(NAME).location)
    with kit.source_api() as (url, token):
        os.environ[settings.SOURCE_API_URL_ENV] = url
        os.environ[settings.SOURCE_API_TOKEN_ENV] = token
        for partition in request.partitions or [None]:
            label = f"partition {partition}" if partition else WHOLE_RANGE
            say(
                f"running full_pipeline ({label}{f', as of {request.as_of}' if request.as_of else ''})"
            )
            started = time.monotonic()
            with stdout_to(log) as terminal:
                result = execute(
                    as_of=request.as_of,
                    partition=partition,
                    say=lambda line, out=terminal: print(line, file=out, flush=True),
                )
            if not result.success:
                raise RunFailed(
                    f"run {result.run_id} ({label}) failed:\n{failure_summary(result.all_events)}\n"
                    f"Dagster's log: {log}"
                )
            say(
                f"run {result.run_id} ({label}) succeeded in {time.monotonic() - started:.1f}s; "
                f"warehouse: {warehouse}; Dagster's log: {log}"
            )


def _import_definitions() -> None:
    import orchestrators.dagster.definitions  # noqa: F401


def _shown(location) -> str:
    """The warehouse as a person may see it: the file, or the URL with its password masked."""
    from lab.postgres import mask

    return mask(location) if isinstance(location, str) else str(location)
