"""Dev-mode runs: ``airflow db migrate`` into the gitignored AIRFLOW_HOME, then ``dag.test()``.

``dag.test()`` runs the DAG in this process with Airflow's own dependency handling, retries and
callbacks, and records the run in the metadata DB (``ui`` shows it afterwards). It runs the ready
tasks one after another and checks no pool: ingestion units overlap only under the scheduler
(``quartet up``), where the writer pool admits them (ADR 0007).
The terminal gets one line per task; Airflow's own log goes to ``.quartet/airflow/logs/run.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from core import kit, settings, warehouse
from core.ingestion import parse_partition
from core.kit import RunFailed, RunRequest, progress
from orchestrators.airflow import DAGS_FOLDER, NAME, PIPELINE_DAG, environment

CHATTY_LOGGERS = ("airflow", "airflow.task", "cosmos", "dlt", "sqlalchemy", "alembic")


def load_dag(dag_id: str = PIPELINE_DAG):
    """A DAG from the DAG folder, as the dag-processor sees it (import errors raise)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RunFailed(f"DAG import errors: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise RunFailed(f"no DAG {dag_id!r} in {DAGS_FOLDER} (found {sorted(bag.dags)})")
    return bag.dags[dag_id]  # (not bag.get_dag: that asks the metadata DB, which may not exist yet)


def run_once(dag, *, as_of: str | None = None, partition: str | None = None):
    """One in-process ``dag.test()`` run; returns the finished DagRun. A partition run's logical
    date is the month's start, so the run is that month's data interval, like a backfill's."""
    logical_date = None
    if partition:
        year, month = parse_partition(partition)
        logical_date = datetime(year, month, 1, tzinfo=UTC)
    return dag.test(logical_date=logical_date, run_conf={"as_of": as_of, "partition": partition})


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
    from core.postgres import mask

    return mask(location) if warehouse.is_postgres(location) else str(location)


def unit_of(task_id: str) -> tuple[str, str]:
    """(kind, unit) of a task id: ``ingest.flights`` -> ingest flights; ``dbt.x_model_build``
    -> dbt x; any other dbt task runs tests."""
    group, _, name = task_id.partition(".")
    if group == "ingest":
        return "ingest", name
    if name.endswith("_model_build"):
        return "dbt", name.removesuffix("_model_build")
    return "test", name.removesuffix("_test")


def report(dag_run, before: dict[str, int], after: dict[str, int]) -> None:
    """One line per task, in the order they ran: its time, the rows it loaded or built."""
    from core.lineage import canonical

    tests = canonical().tests
    for ti in sorted(dag_run.get_task_instances(), key=lambda t: t.start_date or t.end_date or 0):
        kind, unit = unit_of(ti.task_id)
        seconds = (
            (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else 0.0
        )
        if kind == "ingest":
            table = f"{settings.RAW_SCHEMA}.{unit}"
            detail = progress.rows(after.get(table, 0) - before.get(table, 0), new=True)
        elif kind == "dbt":
            table = next((t for t in after if t.split(".", 1)[1] == unit), None)
            detail = ", ".join(
                filter(
                    None,
                    [
                        progress.rows(after.get(table)),
                        progress.tests_summary(len(tests.get(unit, ()))),
                    ],
                )
            )
        else:
            detail = ""
        if ti.state != "success":
            detail = f"{ti.state.upper() if ti.state else 'NOT RUN'} {detail}".strip()
        print(progress.unit_line(NAME, kind, unit, seconds, detail), flush=True)


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
    log = progress.orchestrator_log(NAME, CHATTY_LOGGERS)
    environment.migrate_dev()
    location = settings.for_pipeline(NAME).location
    with kit.source_api() as (url, token):
        environment.source_api_connection(url, token)
        with open(log, "a") as out, contextlib.redirect_stdout(out):  # Airflow prints its log
            dag = load_dag()
        try:
            for partition in request.partitions or (None,):
                before = warehouse.table_counts(location, (settings.RAW_SCHEMA,))
                started = time.monotonic()
                with open(log, "a") as out, contextlib.redirect_stdout(out):
                    dag_run = run_once(dag, as_of=request.as_of, partition=partition)
                after = warehouse.table_counts(location, layers())
                report(dag_run, before, after)
                if dag_run.state != "success":
                    raise RunFailed(
                        f"{PIPELINE_DAG} run {dag_run.run_id} {dag_run.state}: "
                        f"{'; '.join(failures(dag_run))}\n  Airflow's log: {log}"
                    )
                progress.say(
                    NAME,
                    f"run {dag_run.run_id} ({partition or 'all months'}) succeeded in "
                    f"{time.monotonic() - started:.1f}s; Airflow's log: {log}",
                )
        finally:
            os.environ.pop(environment.SOURCE_API_CONN_ENV, None)
    progress.say(NAME, f"done -> {shown(location)}")
