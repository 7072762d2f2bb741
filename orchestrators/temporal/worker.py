"""The worker: ``python -m orchestrators.temporal.worker`` (TEMPORAL_ADDRESS, default localhost:7233).

Two Workers in one process, sharing one thread pool for the synchronous activities: TASK_QUEUE
(the workflows; plan, source status, alert) and WAREHOUSE_TASK_QUEUE (ingestion and dbt) with
:func:`warehouse_slots` slots: one on DuckDB, where core's writer lock admits one writer at a
time across workers; one per ingestion unit on PostgreSQL. The source API's URL and token are
this process's configuration (SOURCE_API_URL / SOURCE_API_TOKEN, or a local API started here).
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

from orchestrators.temporal import ADDRESS_ENV, TASK_QUEUE, UI_URL_ENV, WAREHOUSE_TASK_QUEUE, levers
from orchestrators.temporal.activities import PipelineActivities
from orchestrators.temporal.workflows import (
    BackfillWorkflow,
    PipelineWorkflow,
    SourceWatcherWorkflow,
)

#: threads for the light activities (plan, source status, alert) beside the warehouse slots
LIGHT_THREADS = 3
#: on stop, how long a running activity may go on before it is cancelled and given back to
#: another worker by its retry policy (a repeated load is a no-op: merge on (id, updated_at))
GRACEFUL_STOP = timedelta(seconds=5)


@contextlib.asynccontextmanager
async def workers(client: Client, activities: PipelineActivities) -> AsyncIterator[None]:
    """Both Workers of one worker process, polling until the block ends."""
    slots = warehouse_slots()
    with levers.applied(), ThreadPoolExecutor(max_workers=slots + LIGHT_THREADS) as executor:
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


async def main(url: str, token: str) -> None:
    client = await Client.connect(os.environ.get(ADDRESS_ENV, "localhost:7233"))
    activities = PipelineActivities(url, token, ui_url=os.environ.get(UI_URL_ENV))
    # SIGTERM/SIGINT end the block below in order: each Worker stops polling, lets a running
    # activity finish or gives it back (GRACEFUL_STOP), and closes. A KeyboardInterrupt raised
    # into the event loop instead cancels the Workers' own tasks halfway, and their shutdown
    # then waits for pollers nobody drives any more.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with workers(client, activities):
        print(
            f"worker {client.identity} polling {TASK_QUEUE} and {WAREHOUSE_TASK_QUEUE}", flush=True
        )
        await stop.wait()
        print(f"worker {client.identity} stopping: no new tasks; finishing its own", flush=True)
    print(f"worker {client.identity} stopped", flush=True)


def warehouse_slots() -> int:
    """One slot per ingestion unit (configured resource) where the configured warehouse admits
    parallel writers (core.warehouse), else one."""
    from core.ingestion import load_config
    from core.warehouse import allows_parallel_writers

    return len(load_config().resources) if allows_parallel_writers() else 1


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


if __name__ == "__main__":
    from core import kit

    # before the event loop runs (imports, connecting): SIGTERM stops like Ctrl-C, unwinding
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        warm_imports()
        with kit.source_api() as (api_url, api_token):
            asyncio.run(main(api_url, api_token))
    except KeyboardInterrupt:
        pass
    kit.exit_process(0)
