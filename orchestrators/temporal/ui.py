"""``quartet ui temporal``: the dev server with its UI, a worker, the Schedule, the source watcher
and one finished run to look at; Ctrl-C (or SIGTERM) stops all of it."""

from __future__ import annotations

import asyncio

from core import kit
from core.kit import progress
from orchestrators.temporal import PIPELINE, TASK_QUEUE, WAREHOUSE_TASK_QUEUE
from orchestrators.temporal.run import Server, dev_server


async def _serve(request: kit.UiRequest, server: Server, url: str, token: str) -> None:
    from orchestrators.temporal.activities import PipelineActivities
    from orchestrators.temporal.starter import (
        connect,
        ensure_schedule,
        follow,
        start,
        start_watcher,
        workflow_input,
    )
    from orchestrators.temporal.worker import workers

    client = await connect(server.address)
    async with workers(client, PipelineActivities(url, token, ui_url=server.ui_url)):
        await ensure_schedule(client)
        await start_watcher(client)
        run = workflow_input(kit.RunRequest(name=PIPELINE, as_of=request.as_of))
        handle = await start(client, run)
        progress.say(PIPELINE, f"{server.ui_url} is up; running {handle.id} ...")
        try:
            await follow(client, handle, run)
        except kit.RunFailed as exc:
            progress.say(PIPELINE, str(exc))
        print(
            f"Temporal UI: {server.ui_url}/namespaces/default/workflows (server {server.address}; "
            f"worker on {TASK_QUEUE} + {WAREHOUSE_TASK_QUEUE}). Ctrl-C stops everything.",
            flush=True,
        )
        await asyncio.Event().wait()


#: after Ctrl-C, how long the workers may take to stop before the command leaves them to its own
#: exit: their shutdown waits for their open long polls to end, up to a minute
STOP_GRACE_SECONDS = 5


def serve(request: kit.UiRequest) -> None:
    progress.orchestrator_log(PIPELINE, ("temporalio", "dlt", "dbt"))
    with kit.source_api() as (url, token), dev_server(ui=True, ui_port=request.port) as server:
        loop = asyncio.new_event_loop()
        main = loop.create_task(_serve(request, server, url, token))
        try:
            loop.run_until_complete(main)
        except KeyboardInterrupt:
            main.cancel()  # the workers stop polling; no activity runs once the UI is up
            loop.run_until_complete(asyncio.wait({main}, timeout=STOP_GRACE_SECONDS))
            raise  # then the dev server and the source API stop, as the with-block ends
