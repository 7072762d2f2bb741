"""Workflows: deterministic orchestration only; every side effect is an activity.

* :class:`PipelineWorkflow` - one run: plan, ingest every resource, then build every dbt model
  in DAG order (``job`` = full, ingest or transform). A failing model or test fails the run and
  blocks only what is downstream of it, as ``dbt build`` does; the failure path sends the alert.
* :class:`BackfillWorkflow` - a range of months, one child PipelineWorkflow per month.
* :class:`SourceWatcherWorkflow` - polls the source API's clock and starts a run when it advances.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from orchestrators.temporal import WAREHOUSE_TASK_QUEUE
    from orchestrators.temporal.activities import (
        AlertInput,
        BuildModelInput,
        BuildModelOutput,
        IngestInput,
        IngestOutput,
        PipelineActivities,
        Plan,
        PlanInput,
    )

JOBS = ("full", "ingest", "transform")

#: bounded retries; bad input and failing dbt tests are not worth a second attempt
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=["ConfigError", "DbtBuildError"],
)
#: a worker that dies mid-activity is noticed after this long, and the activity runs again
HEARTBEAT_TIMEOUT = timedelta(seconds=15)
WAREHOUSE_ACTIVITY = {
    "task_queue": WAREHOUSE_TASK_QUEUE,
    "start_to_close_timeout": timedelta(hours=1),
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RETRY,
}
LIGHT_ACTIVITY = {"start_to_close_timeout": timedelta(minutes=5), "retry_policy": RETRY}


@dataclass
class PipelineInput:
    job: str = "full"
    as_of: str | None = None  # the API clock (YYYY-MM-DD); None = whatever it has published
    partition: str | None = None  # a month YYYY-MM; None = everything up to as_of
    alert: bool = True  # a backfill's months leave the alert to the backfill


@dataclass
class PipelineResult:
    job: str
    partition: str | None
    ingested: list[IngestOutput] = field(default_factory=list)
    built: list[BuildModelOutput] = field(default_factory=list)


@dataclass
class BackfillInput:
    partitions: list[str]
    as_of: str | None = None
    job: str = "full"


@dataclass
class WatchInput:
    last_as_of: str | None = None  # None: the first poll sets the baseline
    poll_seconds: float = 60.0
    job: str = "full"


async def _alert(pipeline: str, error: BaseException) -> None:
    info = workflow.info()
    cause = error
    while getattr(cause, "cause", None) is not None:  # ActivityError -> ApplicationError
        cause = cause.cause
    await workflow.execute_activity_method(
        PipelineActivities.send_failure_alert,
        AlertInput(pipeline, info.workflow_id, info.run_id, f"{error}: {cause}"),
        **LIGHT_ACTIVITY,
    )


@workflow.defn
class PipelineWorkflow:
    def __init__(self) -> None:
        self._progress: dict[str, str] = {}

    @workflow.query
    def progress(self) -> dict[str, str]:
        """Each planned unit (raw.<table>, dbt model) -> pending, running, done, failed, skipped."""
        return self._progress

    @workflow.run
    async def run(self, request: PipelineInput) -> PipelineResult:
        if request.job not in JOBS:
            raise ApplicationError(f"job must be one of {JOBS}, got {request.job!r}")
        try:
            return await self._run(request)
        except (ActivityError, ApplicationError) as exc:
            if request.alert:
                await _alert(f"pipeline-{request.job}", exc)
            raise

    async def _run(self, request: PipelineInput) -> PipelineResult:
        plan: Plan = await workflow.execute_activity_method(
            PipelineActivities.plan,
            PlanInput(as_of=request.as_of, partition=request.partition),
            summary="plan from the canonical graph",
            **LIGHT_ACTIVITY,
        )
        result = PipelineResult(job=request.job, partition=request.partition)
        if request.job in ("full", "ingest"):
            result.ingested = await self._ingest(plan, request)
        if request.job in ("full", "transform"):  # the coordination point: after all ingestion
            result.built = await self._transform(plan)
        return result

    async def _ingest(self, plan: Plan, request: PipelineInput) -> list[IngestOutput]:
        """All resources are scheduled at once; the warehouse queue's worker runs one at a time."""

        async def ingest(resource: str) -> IngestOutput:
            self._progress[f"raw.{resource}"] = "running"
            output = await workflow.execute_activity_method(
                PipelineActivities.ingest_resource,
                IngestInput(resource, as_of=request.as_of, partition=request.partition),
                summary=f"ingest {resource}",
                **WAREHOUSE_ACTIVITY,
            )
            self._progress[f"raw.{resource}"] = "done"
            return output

        return list(await asyncio.gather(*(ingest(r) for r in plan.resources)))

    async def _transform(self, plan: Plan) -> list[BuildModelOutput]:
        """One activity per model (with its tests), in DAG order; a failure blocks its downstream."""
        built: list[BuildModelOutput] = []
        failed: dict[str, str] = {}
        skipped: list[str] = []
        for step in plan.models:
            self._progress[step.name] = "pending"
        for step in plan.models:
            blocked = [a for a in step.after if a in failed or a in skipped]
            if blocked:
                skipped.append(step.name)
                self._progress[step.name] = "skipped"
                continue
            self._progress[step.name] = "running"
            try:
                built.append(
                    await workflow.execute_activity_method(
                        PipelineActivities.build_model,
                        BuildModelInput(step.name, [*step.source_tests, *step.tests]),
                        summary=f"dbt build {step.name} (+{len(step.tests)} tests)",
                        **WAREHOUSE_ACTIVITY,
                    )
                )
                self._progress[step.name] = "done"
            except ActivityError as exc:
                failed[step.name] = str(exc.cause or exc)
                self._progress[step.name] = "failed"
        if failed:
            lines = [f"{model}: {error}" for model, error in failed.items()]
            message = "dbt failed:\n  " + "\n  ".join(lines)
            if skipped:
                message += f"\n  skipped downstream: {', '.join(skipped)}"
            raise ApplicationError(message, type="DbtBuildError", non_retryable=True)
        return built


@workflow.defn
class BackfillWorkflow:
    """A range of months: one child run per month, in the order given (one writer at a time)."""

    @workflow.run
    async def run(self, request: BackfillInput) -> list[PipelineResult]:
        results = []
        try:
            for partition in request.partitions:
                results.append(
                    await workflow.execute_child_workflow(
                        PipelineWorkflow.run,
                        PipelineInput(request.job, request.as_of, partition, alert=False),
                        id=f"{workflow.info().workflow_id}/{partition}",
                        static_summary=f"{request.job} {partition}",
                    )
                )
        except ChildWorkflowError as exc:
            await _alert(f"backfill-{request.job}", exc)
            raise
        return results


@workflow.defn
class SourceWatcherWorkflow:
    """Starts a run whenever the source API's clock (its as-of) advances."""

    @workflow.run
    async def run(self, request: WatchInput) -> None:
        last = request.last_as_of
        for _ in range(100):  # then continue as new, so history stays short
            status = await workflow.execute_activity_method(
                PipelineActivities.source_status, summary="poll source as-of", **LIGHT_ACTIVITY
            )
            if last is not None and status.as_of > last:
                as_of = status.as_of[:10]
                await workflow.execute_child_workflow(
                    PipelineWorkflow.run,
                    PipelineInput(request.job, as_of=as_of),
                    id=f"{workflow.info().workflow_id}/as-of-{as_of}",
                    static_summary=f"new source data as of {as_of}",
                )
            last = status.as_of
            await workflow.sleep(timedelta(seconds=request.poll_seconds))
        workflow.continue_as_new(WatchInput(last, request.poll_seconds, request.job))
