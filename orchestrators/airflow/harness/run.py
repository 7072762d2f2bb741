"""Dev-mode runs: ``airflow db migrate`` into the gitignored AIRFLOW_HOME, then ``dag.test()``.

``dag.test()`` runs the DAG in this process with Airflow's own dependency handling, retries and
callbacks, and records the run in the metadata DB (``ui`` shows it afterwards). It runs the ready
tasks one after another and checks no pool: ingestion units overlap only under the scheduler
(``quartet up``), where the writer pool admits them (ADR 0007).
The terminal gets one line per task as it finishes (:class:`UnitLines`, a task-instance
listener); Airflow's own log goes to ``.quartet/airflow/logs/run.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time as clock
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pluggy

from core import kit, project, settings, warehouse
from core.kit import RunFailed, RunRequest, progress
from orchestrators.airflow import DAGS_FOLDER, NAME, PIPELINE_DAG, levers
from orchestrators.airflow.harness import environment

CHATTY_LOGGERS = ("airflow", "airflow.task", "cosmos", "dlt", "sqlalchemy", "alembic")
#: ``airflow.listeners.hookimpl`` itself (a pluggy marker of the project "airflow"), made here:
#: importing Airflow at this module's import would read its configuration before it is set
hookimpl = pluggy.HookimplMarker("airflow")


def load_dag(dag_id: str = PIPELINE_DAG):
    """A DAG from the DAG folder, as the dag-processor sees it (import errors raise)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RunFailed(f"DAG import errors: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise RunFailed(f"no DAG {dag_id!r} in {DAGS_FOLDER} (found {sorted(bag.dags)})")
    return bag.dags[dag_id]  # (not bag.get_dag: that asks the metadata DB, which may not exist yet)


@contextlib.contextmanager
def to_log_only(log: Path, name: str) -> Iterator[None]:
    """For the duration, the records of the logger ``name`` go to ``log`` and not the terminal."""
    logger = logging.getLogger(name)
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)
        handler.close()


def parsed_dag(log: Path, dag_id: str = PIPELINE_DAG):
    """:func:`load_dag` with what parsing prints sent to ``log``: Airflow prints log lines, and
    Cosmos' first import warns that it emits no OpenLineage events without Airflow's OpenLineage
    provider. Quartet emits none on purpose (the Assets are declared statically, ADR 0007): a
    notice for the log, not for the terminal."""
    with (
        to_log_only(log, "cosmos.operators.local"),
        open(log, "a") as out,
        contextlib.redirect_stdout(out),
    ):
        import cosmos.operators.local  # noqa: F401  (the notice comes with this import)

        return load_dag(dag_id)


def run_once(dag, *, as_of: str | None = None, partition: str | None = None):
    """One in-process ``dag.test()`` run; returns the finished DagRun. A partition run's logical
    date is the partition's first instant, so the run is that partition's data interval, like a
    backfill's; without one it is a manual run over whatever is new."""
    from orchestrators.airflow.tasks import partition_start, run_conf

    logical_date = partition_start(partition) if partition else None
    # the tasks run in this process: dbt (through Cosmos) reads its profile from its environment,
    # so it is set for this run's warehouse here, where the orchestrator takes over
    settings.export_dbt_env(settings.for_pipeline(NAME))
    with levers.frozen_heap():
        return dag.test(
            logical_date=logical_date, run_conf=run_conf(as_of=as_of, partition=partition)
        )


def failures(dag_run) -> list[str]:
    """The tasks that did not succeed: each failed one with its error (when this process ran it),
    then how many tasks did not run because of them."""
    from orchestrators.airflow.tasks import FAILED_TASKS

    failed, not_run = [], 0
    for ti in sorted(dag_run.get_task_instances(), key=lambda t: t.task_id):
        if ti.state in ("success", "skipped"):
            continue
        if ti.state == "upstream_failed":
            not_run += 1
            continue
        error = FAILED_TASKS.get((dag_run.run_id, ti.task_id))
        failed.append(f"{ti.task_id} {ti.state}" + (f" ({error})" if error else ""))
    if not_run:
        failed.append(f"{not_run} downstream tasks not run")
    return failed


def layers() -> tuple[str, ...]:
    """The warehouse schemas the pipeline writes (raw and the dbt layers)."""
    from core.lineage import canonical

    return tuple(sorted(set(canonical().nodes.values())))


def shown(location: warehouse.Location) -> str:
    """The warehouse as a user may see it: the DuckDB file, or the URL without its password."""
    from lab.postgres import mask

    return mask(location) if warehouse.is_postgres(location) else str(location)


def unit_of(task_id: str) -> tuple[str, str]:
    """(kind, unit) of a task id: ``ingest.<resource>`` -> ingest <resource>;
    ``dbt.<model>_model_build`` -> dbt <model>; any other dbt task runs tests."""
    group, _, name = task_id.partition(".")
    if group == "ingest":
        return "ingest", name
    if name.endswith("_model_build"):
        return "dbt", name.removesuffix("_model_build")
    return "test", name.removesuffix("_test")


#: the unit of the task running the tests declared on the raw tables (``dbt.raw_sources_test``)
SOURCE_TESTS = "raw_sources"


def source_tests(tests: dict[str, tuple]) -> int:
    """How many dbt tests the raw tables carry (core.lineage attaches them to the raw table's
    node, ``<raw schema>.<table>``)."""
    raw = f"{settings.RAW_SCHEMA}."
    return sum(len(found) for node, found in tests.items() if node.startswith(raw))


class UnitLines:
    """A task-instance listener printing each task's line as that task finishes.

    ``dag.test()`` runs every task in this process, and the Task SDK calls the listeners of
    the process in each task's finalizer: the line appears while the run goes on, as a user
    watching it expects (and a kill after the last dbt model lands before the run's success).
    The line goes to the terminal stream given here: Airflow's own output, redirected to its log
    meanwhile, does not."""

    def __init__(self, dag_id: str, location: warehouse.Location, out: TextIO) -> None:
        from core.lineage import canonical

        self.dag_id, self.location, self.out = dag_id, location, out
        self.tests = canonical().tests
        self.raw_before = warehouse.table_counts(location, (settings.RAW_SCHEMA,))
        #: the task ids given a line: the rest (never run: upstream failed) get theirs at the end
        self.reported: set[str] = set()

    def line(self, task_id: str, seconds: float, state: str | None, detail: str = "") -> None:
        kind, unit = unit_of(task_id)
        if state != "success":
            detail = f"{state.upper() if state else 'NOT RUN'} {detail}".strip()
        print(progress.unit_line(NAME, kind, unit, seconds, detail), file=self.out, flush=True)

    def finished(self, ti, state: str, detail: str = "") -> None:
        if ti.dag_id != self.dag_id:
            return
        seconds = (
            (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else 0.0
        )
        if state == "success":
            detail = self.built(ti.task_id)
        if state != "up_for_retry":
            self.reported.add(ti.task_id)
        self.line(ti.task_id, seconds, state, detail)

    def built(self, task_id: str) -> str:
        """What a finished task did to the warehouse: rows loaded, or a model's rows and tests."""
        kind, unit = unit_of(task_id)
        if kind == "ingest":
            table = f"{settings.RAW_SCHEMA}.{unit}"
            counts = warehouse.table_counts(self.location, (settings.RAW_SCHEMA,))
            return progress.rows(counts.get(table, 0) - self.raw_before.get(table, 0), new=True)
        if kind == "test" and unit == SOURCE_TESTS:
            return progress.tests_summary(source_tests(self.tests))
        if kind == "dbt":
            counts = warehouse.table_counts(self.location, layers())
            table = next((t for t in counts if t.split(".", 1)[1] == unit), None)
            return ", ".join(
                filter(
                    None,
                    [
                        progress.rows(counts.get(table)),
                        progress.tests_summary(len(self.tests.get(unit, ()))),
                    ],
                )
            )
        return ""

    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance) -> None:
        self.finished(task_instance, "success")

    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error) -> None:
        state = str(getattr(task_instance.state, "value", task_instance.state))
        retrying = state == "up_for_retry"
        detail = f"(try {task_instance.try_number})" if retrying else ""
        self.finished(task_instance, "up_for_retry" if retrying else "failed", detail)

    @hookimpl
    def on_task_instance_skipped(self, previous_state, task_instance) -> None:
        self.finished(task_instance, "skipped")

    def not_run(self, dag_run) -> None:
        """The lines of the tasks that never started (their upstream failed)."""
        for ti in sorted(dag_run.get_task_instances(), key=lambda t: t.task_id):
            if ti.task_id not in self.reported:
                self.line(ti.task_id, 0.0, ti.state)


@contextlib.contextmanager
def unit_lines(dag_id: str, location: warehouse.Location) -> Iterator[UnitLines]:
    """:class:`UnitLines` registered with the Task SDK's listener manager for one run."""
    from airflow.sdk.listener import get_listener_manager

    listener = UnitLines(dag_id, location, sys.stdout)
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        yield listener
    finally:
        manager.pm.unregister(listener)


@contextlib.contextmanager
def one_dev_run_at_a_time() -> Iterator[None]:
    """Dev-mode runs share the home's SQLite metadata DB, which takes one writer: two
    ``dag.test()`` at once make one of them fail on an insert (seen: into task_instance_history).
    A second ``quartet run airflow`` waits for the first, saying for whom, then runs; the kernel
    drops the lock of a killed run."""
    home = environment.airflow_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "dev-run.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            progress.say(NAME, f"waiting for the dev-mode run of {holder} to end (one at a time)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"PID {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)


def run(request: RunRequest) -> None:
    """The full pipeline once per partition (or once over everything); raises on a failure."""
    with one_dev_run_at_a_time():
        _run(request)


def _run(request: RunRequest) -> None:
    from orchestrators.airflow.tasks import checked

    checked(kit.policy())  # a field Airflow cannot honour: refused by name before anything starts
    log = progress.orchestrator_log(NAME, CHATTY_LOGGERS)
    environment.migrate_dev()
    location = settings.for_pipeline(NAME).location
    with kit.source_api() as (url, token):
        if project.current().demo_api:  # the API's connection, for a project that runs it
            environment.source_api_connection(url, token)
        dag = parsed_dag(log)
        try:
            # one handle on the log for every partition's run: Airflow's logging keeps the
            # stream it was first given, so a handle closed after one run fails the next
            with open(log, "a") as out:
                for partition in request.partitions or (None,):
                    followed_run(dag, location, log, out, as_of=request.as_of, partition=partition)
        finally:
            os.environ.pop(environment.SOURCE_API_CONN_ENV, None)
    progress.say(NAME, f"done -> {shown(location)}")


def everything() -> str:
    """What a run given no partition loads, in the project's words."""
    scheme = project.current().partitions.scheme
    return {"monthly": "all months", "daily": "all days"}.get(scheme, "everything new")


def followed_run(
    dag,
    location: warehouse.Location,
    log: Path,
    out: TextIO,
    *,
    as_of: str | None,
    partition: str | None,
):
    """One ``dag.test()`` run with a line per task as it ends (Airflow's own output to ``out``,
    the open ``log``), then the run's line naming the log; returns the DagRun, raises unless it
    succeeded."""
    started = clock.monotonic()
    with (
        unit_lines(dag.dag_id, location) as lines,
        contextlib.redirect_stdout(out),  # Airflow prints its log
    ):
        dag_run = run_once(dag, as_of=as_of, partition=partition)
    lines.not_run(dag_run)
    if dag_run.state != "success":
        raise RunFailed(
            f"{PIPELINE_DAG} run {dag_run.run_id} {dag_run.state}: "
            f"{'; '.join(failures(dag_run))}\n  Airflow's log: {log}"
        )
    progress.say(
        NAME,
        f"run {dag_run.run_id} ({partition or everything()}) succeeded in "
        f"{clock.monotonic() - started:.1f}s; Airflow's log: {log}",
    )
    return dag_run
