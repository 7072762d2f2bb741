"""The worker: ``python -m orchestrators.temporal.worker`` (TEMPORAL_ADDRESS, default localhost:7233).

Two pollers in one process, sharing one thread pool for the synchronous activities:

* TASK_QUEUE: the workflows and the light activities (plan, source status, alert);
* WAREHOUSE_TASK_QUEUE: ingestion and dbt, ``max_concurrent_activities=1`` - one writer at a
  time on the DuckDB warehouse; other runs' activities wait in the queue (visible in the UI).

The source API's URL and token are this process's configuration (SOURCE_API_URL /
SOURCE_API_TOKEN, or a local API started here): they never travel through Temporal.
"""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from orchestrators.temporal import TASK_QUEUE, WAREHOUSE_TASK_QUEUE
from orchestrators.temporal.activities import PipelineActivities
from orchestrators.temporal.workflows import (
    BackfillWorkflow,
    PipelineWorkflow,
    SourceWatcherWorkflow,
)


def workers(client: Client, activities: PipelineActivities, executor: ThreadPoolExecutor):
    """The two Workers of one worker process (use them with ``async with``)."""
    return (
        Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[PipelineWorkflow, BackfillWorkflow, SourceWatcherWorkflow],
            activities=[activities.plan, activities.source_status, activities.send_failure_alert],
            activity_executor=executor,
        ),
        Worker(
            client,
            task_queue=WAREHOUSE_TASK_QUEUE,
            activities=[activities.ingest_resource, activities.build_model],
            activity_executor=executor,
            max_concurrent_activities=1,
        ),
    )


async def main() -> None:
    from core.ingestion import load_config
    from core.source_api import SourceAPIConfig, running_source_api
    from orchestrators.temporal.server import ADDRESS_ENV, UI_URL_ENV
    from orchestrators.temporal.starter import connect

    client = await connect(os.environ.get(ADDRESS_ENV, "localhost:7233"))
    config = load_config()
    api = SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    with running_source_api(api) as (url, token), ThreadPoolExecutor(max_workers=4) as executor:
        activities = PipelineActivities(url, token, ui_url=os.environ.get(UI_URL_ENV))
        queue_worker, warehouse_worker = workers(client, activities, executor)
        async with queue_worker, warehouse_worker:
            print(f"worker polling {TASK_QUEUE} and {WAREHOUSE_TASK_QUEUE}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
