"""Starting things on the server, and following them: a run or a backfill, the monthly Schedule,
the source watcher.

``python -m orchestrators.temporal.starter`` runs the full pipeline on the server at
TEMPORAL_ADDRESS (default localhost:7233), as samples-python's starters do; a worker must be
polling (``python -m orchestrators.temporal.worker``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

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
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from core import kit
from core.kit import progress
from orchestrators.temporal import ADDRESS_ENV, PIPELINE, TASK_QUEUE
from orchestrators.temporal.workflows import (
    BackfillInput,
    BackfillWorkflow,
    PipelineInput,
    PipelineWorkflow,
    RunPolicy,
    SourceWatcherWorkflow,
    Unit,
    WatchInput,
)

SCHEDULE_ID = "quartet-monthly"
WATCHER_ID = "quartet-source-watcher"
Request = PipelineInput | BackfillInput


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


def run_policy() -> RunPolicy:
    """The configured policy numbers, as the workflows take them (in their input), and whether
    the configured warehouse admits parallel ingestion (QUARTET_WAREHOUSE_URL: PostgreSQL)."""
    from core.warehouse import allows_parallel_writers

    p = kit.policy()
    return RunPolicy(
        unit_retries=p.unit_retries,
        retry_delay_seconds=p.retry_delay_seconds,
        retry_backoff=p.retry_backoff,
        max_retry_delay_seconds=p.max_retry_delay_seconds,
        heartbeat_seconds=p.heartbeat_seconds,
        source_poll_seconds=p.source_poll_seconds,
        parallel_ingestion=allows_parallel_writers(),
    )


def workflow_input(request: kit.RunRequest) -> Request:
    """The kit's run request as a workflow input: several months are a backfill."""
    if len(request.partitions) > 1:
        return BackfillInput(list(request.partitions), as_of=request.as_of, policy=run_policy())
    partition = request.partitions[0] if request.partitions else None
    return PipelineInput(as_of=request.as_of, partition=partition, policy=run_policy())


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


async def terminate_running(client: Client, workflow: str, reason: str) -> None:
    """Terminate the run of ``workflow`` that is still running, if any, giving ``reason``."""
    handle = client.get_workflow_handle(workflow)
    try:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason=reason)
    except RPCError:  # no such workflow yet, or it closed meanwhile
        pass


async def follow(
    client: Client,
    handle: WorkflowHandle,
    request: Request,
    *,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> None:
    """Print one line per unit as the run goes; return on success, raise kit.RunFailed on failure."""
    runs = (
        [(p, client.get_workflow_handle(f"{handle.id}/{p}")) for p in request.partitions]
        if isinstance(request, BackfillInput)
        else [(request.partition, handle)]
    )
    poll = kit.policy().follow_poll_seconds
    for partition, run in runs:
        shown: set[str] = set()
        while True:
            closed = await _closed(run)  # then one last look at its units
            units = await _progress(run)
            ended = sorted(
                (unit.ended, name)
                for name, unit in units.items()
                if unit.state in ("done", "failed", "skipped") and name not in shown
            )
            for _, name in ended:  # in the order the units ended: a model after its parents
                unit = units[name]
                shown.add(name)
                detail = unit.detail if unit.state == "done" else unit.state.upper()
                label = f"{name} [{partition}]" if len(runs) > 1 else name
                say(progress.unit_line(PIPELINE, unit.kind, label, unit.seconds or 0.0, detail))
            if closed:
                break
            await asyncio.sleep(poll)
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        while getattr(cause, "cause", None) is not None:
            cause = cause.cause
        raise kit.RunFailed(
            f"workflow {handle.id} failed: {getattr(cause, 'message', cause)}\n  its history: temporal workflow show "
            f"--workflow-id {handle.id} (or the Temporal UI)"
        ) from None


async def _progress(handle: WorkflowHandle) -> dict[str, Unit]:
    try:
        return await handle.query(PipelineWorkflow.progress)
    except RPCError:  # not started yet, or no worker has picked it up
        return {}
    except Exception:  # a closed run whose worker is gone cannot answer
        return {}


async def _closed(handle: WorkflowHandle) -> bool:
    try:
        return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
    except RPCError:  # a backfill's child that does not exist yet
        return False


def monthly_schedule(request: PipelineInput | None = None) -> Schedule:
    """The configured schedule (cron, UTC): by default an incremental run of all published."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PipelineWorkflow.run,
            request or PipelineInput(policy=run_policy()),
            id="quartet-scheduled",
            task_queue=TASK_QUEUE,
        ),
        spec=ScheduleSpec(cron_expressions=[kit.policy().schedule]),
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
    client: Client, *, last_as_of: str | None = None, policy: RunPolicy | None = None
) -> WorkflowHandle:
    """The event trigger: one watcher per namespace (an existing one is kept)."""
    return await client.start_workflow(
        SourceWatcherWorkflow.run,
        WatchInput(last_as_of=last_as_of, policy=policy or run_policy()),
        id=WATCHER_ID,
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def main(client: Client | None = None, request: PipelineInput | None = None):
    client = client or await connect(os.environ.get(ADDRESS_ENV, "localhost:7233"))
    handle = await start(client, request or PipelineInput(policy=run_policy()))
    print(f"started {handle.id}; waiting for its result", flush=True)
    return await handle.result()


if __name__ == "__main__":
    from core.kit import exit_process

    print(asyncio.run(main()))
    exit_process(0)
