"""Starting things on the server: a run or a backfill, the monthly Schedule, the source watcher.

``python -m orchestrators.temporal.starter`` runs the full pipeline on the server at
TEMPORAL_ADDRESS (default localhost:7233), as samples-python's starters do; a worker must be
polling (``python -m orchestrators.temporal.worker``).
"""

from __future__ import annotations

import asyncio
import os

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy

from orchestrators.temporal import TASK_QUEUE
from orchestrators.temporal.workflows import (
    BackfillInput,
    BackfillWorkflow,
    PipelineInput,
    PipelineWorkflow,
    SourceWatcherWorkflow,
    WatchInput,
)

SCHEDULE_ID = "quartet-monthly"
WATCHER_ID = "quartet-source-watcher"


async def connect(address: str, timeout: float = 60.0) -> Client:
    """Connect, waiting for a server that is still starting."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


def workflow_id(request: PipelineInput | BackfillInput) -> str:
    """A business id: the same request while it runs joins that run instead of running twice."""
    as_of = request.as_of or "latest"
    if isinstance(request, BackfillInput):
        return f"quartet-backfill-{request.job}-{'+'.join(request.partitions)}-as-of-{as_of}"
    partition = f"-{request.partition}" if request.partition else ""
    return f"quartet-{request.job}{partition}-as-of-{as_of}"


async def start(client: Client, request: PipelineInput | BackfillInput) -> WorkflowHandle:
    workflow = BackfillWorkflow.run if isinstance(request, BackfillInput) else PipelineWorkflow.run
    return await client.start_workflow(
        workflow,
        request,
        id=workflow_id(request),
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,  # resume an interrupted run
    )


def monthly_schedule(request: PipelineInput | None = None) -> Schedule:
    """On the 1st of every month at 06:00 UTC: by default an incremental run of all published."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PipelineWorkflow.run,
            request or PipelineInput(),
            id="quartet-scheduled",
            task_queue=TASK_QUEUE,
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    day_of_month=[ScheduleRange(1)],
                    hour=[ScheduleRange(6)],
                    comment="monthly: the 1st at 06:00 UTC",
                )
            ]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(
    client: Client, request: PipelineInput | None = None, schedule_id: str = SCHEDULE_ID
) -> ScheduleHandle:
    """Create the monthly Schedule, or bring an existing one up to date."""
    schedule = monthly_schedule(request)
    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(update)
        return handle


async def start_watcher(
    client: Client, *, last_as_of: str | None = None, poll_seconds: float = 60.0
) -> WorkflowHandle:
    """The event trigger: one watcher per namespace (an existing one is kept)."""
    return await client.start_workflow(
        SourceWatcherWorkflow.run,
        WatchInput(last_as_of=last_as_of, poll_seconds=poll_seconds),
        id=WATCHER_ID,
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def main(client: Client | None = None, request: PipelineInput | None = None):
    client = client or await connect(os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    handle = await start(client, request or PipelineInput())
    print(f"started {handle.id}; waiting for its result", flush=True)
    return await handle.result()


if __name__ == "__main__":
    print(asyncio.run(main()))
