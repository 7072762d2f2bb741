"""The worker: ``python -m orchestrators.temporal.worker`` (TEMPORAL_ADDRESS, default localhost:7233).

Two pollers in one process, sharing one thread pool for the synchronous activities:

* TASK_QUEUE: the workflows and the light activities (plan, source status, alert);
* WAREHOUSE_TASK_QUEUE: ingestion and dbt (one parsed dbt Manifest reused by every
  ``build_model``, parsed again when the project changes: core.dbt.reusing_manifest), with
  :func:`warehouse_slots` as ``max_concurrent_activities``. On DuckDB one slot per worker;
  across several workers the warehouse's writer lock (a file lock the kernel drops when its
  holder dies) admits one writer at a time, and a waiting activity heartbeats while it waits. On PostgreSQL one slot per
  ingestion unit, so that the units a workflow starts at once also run at once.

The source API's URL and token are this process's configuration (SOURCE_API_URL /
SOURCE_API_TOKEN, or a local API started here): they never travel through Temporal. The
worker's own log (activities, dlt, dbt) goes to stdout, which the deployed mode sends to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from orchestrators.temporal import ADDRESS_ENV, TASK_QUEUE, UI_URL_ENV, WAREHOUSE_TASK_QUEUE
from orchestrators.temporal.activities import PipelineActivities
from orchestrators.temporal.workflows import (
    BackfillWorkflow,
    PipelineWorkflow,
    SourceWatcherWorkflow,
)


def warehouse_slots() -> int:
    """The warehouse queue's activity slots: one per ingestion unit (configured resource) where
    the configured warehouse admits parallel writers (core.warehouse), else one."""
    from core.ingestion import load_config
    from core.warehouse import allows_parallel_writers

    return len(load_config().resources) if allows_parallel_writers() else 1


#: threads for the light activities (plan, source status, alert) beside the warehouse slots
LIGHT_THREADS = 3

#: on stop, how long a running activity may go on before it is cancelled. Either way nothing is
#: lost: the worker polls no new task once its stop begins; an activity that ends in this time
#: reports its result; one still running is cancelled and reported failed, and its retry policy
#: gives it to another worker at once (a worker killed outright gives it back too, when its
#: heartbeat timeout expires). A cancelled attempt's partial work is harmless: the writer lock
#: is released with the exception, dlt's unfinished load package is finished or dropped before
#: the next extract, and the merge on (id, updated_at) makes a repeated load a no-op.
GRACEFUL_STOP = timedelta(seconds=5)


@contextlib.asynccontextmanager
async def workers(client: Client, activities: PipelineActivities) -> AsyncIterator[None]:
    """Both Workers of one worker process, polling until the block ends."""
    from core import dbt

    slots = warehouse_slots()
    # one dbt build per model: the worker parses the project once, not once per model
    with dbt.reusing_manifest(), ThreadPoolExecutor(max_workers=slots + LIGHT_THREADS) as executor:
        async with (
            Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[PipelineWorkflow, BackfillWorkflow, SourceWatcherWorkflow],
                activities=[
                    activities.plan,
                    activities.source_status,
                    activities.send_failure_alert,
                ],
                activity_executor=executor,
                graceful_shutdown_timeout=GRACEFUL_STOP,
            ),
            Worker(
                client,
                task_queue=WAREHOUSE_TASK_QUEUE,
                activities=[activities.ingest_resource, activities.build_model],
                activity_executor=executor,
                max_concurrent_activities=slots,
                graceful_shutdown_timeout=GRACEFUL_STOP,
            ),
        ):
            yield


def warm_imports() -> None:
    """Import dlt and dbt before polling, not inside the first activity.

    A sync activity is cancelled (its heartbeat timeout expired, the server went away) by an
    exception raised into its thread wherever it is; landing inside a half-done import, it leaves
    that module broken for the life of the process (seen: ``module 'dbt.artifacts.resources' has
    no attribute 'types'`` on every later dbt build of the worker).
    """
    import dbt.adapters.duckdb
    import dbt.adapters.postgres
    import dbt.cli.main
    import dbt.contracts.results
    import dbt.task.build  # noqa: F401
    import dlt.destinations  # noqa: F401


async def serve(url: str, token: str) -> None:
    from orchestrators.temporal.starter import connect

    client = await connect(os.environ.get(ADDRESS_ENV, "localhost:7233"))
    activities = PipelineActivities(url, token, ui_url=os.environ.get(UI_URL_ENV))
    # SIGTERM/SIGINT end the block below in order: each Worker stops polling, lets a running
    # activity finish or gives it back (GRACEFUL_STOP), and closes. A KeyboardInterrupt raised
    # into the event loop instead cancels the Workers' own tasks halfway, and their shutdown
    # then waits for pollers nobody drives any more, until `down` kills the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with workers(client, activities):
        print(
            f"worker {client.identity} polling {TASK_QUEUE} and {WAREHOUSE_TASK_QUEUE}", flush=True
        )
        await stop.wait()
        print(f"worker {client.identity} stopping: no new tasks; finishing its own", flush=True)
    print(f"worker {client.identity} stopped", flush=True)


def main() -> int:
    from core import kit

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        warm_imports()
        with kit.source_api() as (url, token):
            asyncio.run(serve(url, token))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    from core.kit import exit_process

    # before the event loop runs (imports, connecting): SIGTERM stops like Ctrl-C, unwinding
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    exit_process(main())
