"""The starter: puts runs, the monthly Schedule and the source watcher on the server.

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
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy

from core import kit
from core.ingestion import OrchestrationPolicy
from orchestrators.temporal import ADDRESS_ENV, TASK_QUEUE
from orchestrators.temporal.workflows import (
    BackfillInput,
    BackfillWorkflow,
    PipelineInput,
    PipelineWorkflow,
    SourceWatcherWorkflow,
    WatchInput,
    honoured,
)

SCHEDULE_ID = "quartet-monthly"
WATCHER_ID = "quartet-source-watcher"
Request = PipelineInput | BackfillInput


async def main(client: Client | None = None, request: PipelineInput | None = None):
    client = client or await Client.connect(os.environ.get(ADDRESS_ENV, "localhost:7233"))
    handle = await start(client, request or PipelineInput(**placement()))
    print(f"started {handle.id}; waiting for its result", flush=True)
    return await handle.result()


def configured_policy() -> OrchestrationPolicy:
    """core/ingestion.toml's [orchestration] policy, refused by name where Temporal cannot
    honour a field (a ConfigError: ``quartet run temporal`` exits 2 before anything starts)."""
    return honoured(kit.policy())


def placement() -> dict:
    """What every workflow input carries: the configured policy, and whether the configured
    warehouse admits parallel ingestion (core.warehouse: PostgreSQL yes, DuckDB no)."""
    from core.warehouse import allows_parallel_writers

    return {"policy": configured_policy(), "parallel_ingestion": allows_parallel_writers()}


def workflow_input(request: kit.RunRequest) -> Request:
    """The kit's run request as a workflow input: several months are a backfill."""
    if len(request.partitions) > 1:
        return BackfillInput(list(request.partitions), as_of=request.as_of, **placement())
    partition = request.partitions[0] if request.partitions else None
    return PipelineInput(as_of=request.as_of, partition=partition, **placement())


def workflow_id(request: Request) -> str:
    """A business id: the same request while it runs joins that run instead of running twice."""
    as_of = request.as_of or "latest"
    if isinstance(request, BackfillInput):
        return f"quartet-backfill-{request.job}-{'+'.join(request.partitions)}-as-of-{as_of}"
    partition = f"-{request.partition}" if request.partition else ""
    return f"quartet-{request.job}{partition}-as-of-{as_of}"


async def start(
    client: Client,
    request: Request,
    *,
    conflict: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.USE_EXISTING,
) -> WorkflowHandle:
    """Start ``request``; by default the same request already running is joined, not doubled."""
    workflow = BackfillWorkflow.run if isinstance(request, BackfillInput) else PipelineWorkflow.run
    return await client.start_workflow(
        workflow,
        request,
        id=workflow_id(request),
        task_queue=TASK_QUEUE,
        id_conflict_policy=conflict,
    )


def monthly_schedule(request: PipelineInput | None = None) -> Schedule:
    """The configured schedule (cron, UTC): by default an incremental run of all published."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PipelineWorkflow.run,
            request or PipelineInput(**placement()),
            id="quartet-scheduled",
            task_queue=TASK_QUEUE,
        ),
        spec=ScheduleSpec(cron_expressions=[configured_policy().schedule]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(
    client: Client, request: PipelineInput | None = None, schedule_id: str = SCHEDULE_ID
) -> ScheduleHandle:
    """Create the Schedule, or bring an existing one up to date."""
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
    client: Client, *, last_as_of: str | None = None, policy: OrchestrationPolicy | None = None
) -> WorkflowHandle | None:
    """The event trigger: one watcher per namespace (an existing one is kept); none for a
    project that declares no freshness probe (nothing to poll)."""
    from core import project

    chosen = project.current()
    if not chosen.freshness_probe:
        return None
    inputs = placement()
    if policy is not None:  # e.g. a shorter poll interval
        inputs["policy"] = policy
    return await client.start_workflow(
        SourceWatcherWorkflow.run,
        WatchInput(last_as_of, **inputs, clock=chosen.clock),
        id=WATCHER_ID,
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


if __name__ == "__main__":
    from core.kit import exit_process

    print(asyncio.run(main()))
    exit_process(0)
