"""Quartet on Temporal: the shared dlt + dbt pipeline as a durable workflow.

File roles as in temporalio/samples-python: ``activities.py`` (the work, calling core/),
``workflows.py`` (deterministic orchestration), ``worker.py`` (runs both), ``starter.py``
(starts and follows workflows, the schedule and the watcher); the kit's file plan around them:
``run.py`` (dev mode), ``ui.py``, ``lineage.py``, ``deploy.py`` (the server and a worker fleet).
"""

from typing import NoReturn

#: workflows and light activities (planning, polling the source, alerts)
TASK_QUEUE = "quartet"
#: activities that write to the DuckDB warehouse (ingestion, dbt): one slot per worker
WAREHOUSE_TASK_QUEUE = "quartet-warehouse"
#: the pipeline name: warehouse/temporal.duckdb, .quartet/temporal/
PIPELINE = "temporal"
#: where a worker finds the server (host:port of the frontend), and the UI for links in alerts
ADDRESS_ENV = "TEMPORAL_ADDRESS"
UI_URL_ENV = "TEMPORAL_UI_URL"


def exit_process(code: int) -> NoReturn:
    """End this process with ``code`` once its work is done, skipping the interpreter's teardown.

    The Temporal SDK's Rust core keeps its own (Tokio) threads, which can still call into Python
    while the interpreter finalizes; CPython then aborts with "PyGILState_Release: thread state
    ... must be current when releasing" and the process exits -6 after a run that succeeded (seen
    once in CI; a known SDK bug). Every resource of a command is released by its own ``with``
    block before this point, so only the streams and the log handlers need flushing.
    """
    import contextlib
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed (a broken pipe): nothing to flush
            stream.flush()
    os._exit(code)
