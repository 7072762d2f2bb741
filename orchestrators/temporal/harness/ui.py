"""``quartet ui temporal``: the dev server with its UI, a worker, the Schedule, the source watcher
and one finished run to look at; Ctrl-C (or SIGTERM) stops all of it."""

from __future__ import annotations

import asyncio

from core import kit, settings
from core.kit import progress
from orchestrators.temporal import PIPELINE, TASK_QUEUE, WAREHOUSE_TASK_QUEUE
from orchestrators.temporal.harness.run import Server, dev_server
from orchestrators.temporal.starter import SCHEDULE_ID
from orchestrators.temporal.worker import GRACEFUL_STOP


async def _serve(request: kit.UiRequest, server: Server, url: str, token: str) -> None:
    from orchestrators.temporal.activities import PipelineActivities
    from orchestrators.temporal.harness.run import connect, follow
    from orchestrators.temporal.starter import ensure_schedule, start, start_watcher, workflow_input
    from orchestrators.temporal.worker import workers

    client = await connect(server.address)
    async with workers(client, PipelineActivities(url, token, ui_url=server.ui_url)):
        await ensure_schedule(client)
        await start_watcher(client)
        run = workflow_input(kit.RunRequest(name=PIPELINE, as_of=request.as_of))
        handle = await start(client, run)
        progress.say(PIPELINE, f"workflow {handle.id} on {server.address}: running it ...")
        try:
            await follow(client, handle, run)
        except kit.RunFailed as exc:
            progress.say(PIPELINE, str(exc))
        run_id = (await handle.describe()).run_id
        for line in links(str(server.ui_url), handle.id, run_id):
            progress.say(PIPELINE, line)
        progress.say(
            PIPELINE,
            f"Temporal UI on {server.ui_url} (server {server.address}; a worker polling "
            f"{TASK_QUEUE} and {WAREHOUSE_TASK_QUEUE}); Ctrl-C stops everything",
        )
        await asyncio.Event().wait()


def links(ui_url: str, workflow_id: str, run_id: str) -> list[str]:
    """The pages a person looks at first, the run's graph first: its Timeline (one bar per
    activity, ingestion then dbt in DAG order); every run the home's server holds (those of
    ``quartet run temporal`` too: they share its SQLite file); the Schedule."""
    namespace = f"{ui_url}/namespaces/default"
    return [
        f"the last run as a graph:  {namespace}/workflows/{workflow_id}/{run_id}/timeline",
        f"every run:                {namespace}/workflows",
        f"the monthly schedule:     {namespace}/schedules/{SCHEDULE_ID}",
    ]


#: after Ctrl-C, how long the workers may take to stop before the command leaves them to its own
#: exit: a running activity gets worker.GRACEFUL_STOP to finish before it is given back
STOP_GRACE_SECONDS = GRACEFUL_STOP.total_seconds() + 5


def serve(request: kit.UiRequest) -> None:
    log = progress.orchestrator_log(PIPELINE, ("temporalio", "dlt", "dbt"))
    progress.say(PIPELINE, f"the orchestrator's log: {settings.shown_path(log)}")
    with kit.source_api() as (url, token), dev_server(ui=True, ui_port=request.port) as server:
        loop = asyncio.new_event_loop()
        main = loop.create_task(_serve(request, server, url, token))
        try:
            loop.run_until_complete(main)
        except KeyboardInterrupt:
            main.cancel()  # the workers stop polling; no activity runs once the UI is up
            loop.run_until_complete(asyncio.wait({main}, timeout=STOP_GRACE_SECONDS))
            raise  # then the dev server and the source API stop, as the with-block ends
