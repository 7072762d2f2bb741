"""Workflows: deterministic orchestration only; every side effect is an activity.

* :class:`PipelineWorkflow` - one run: plan, ingest every resource, then build every dbt model
  in ref order (``job`` = full, ingest or transform). A failing model or test fails the run and
  blocks only what is downstream of it, as ``dbt build`` does; the failure path sends the alert.
* :class:`BackfillWorkflow` - a range of months, one child PipelineWorkflow per month.
* :class:`SourceWatcherWorkflow` - polls the source API's clock and starts a run when it advances.

Retries, the heartbeat timeout and the poll interval come from core's ``OrchestrationPolicy``
object, carried in the workflow's input as the starter read it: a workflow reads no files, so a
replay sees exactly the policy the run started with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from core.dbt import NodeResult, failure_report
    from core.failures import ConfigError
    from core.ingestion import OrchestrationPolicy
    from orchestrators.temporal import WAREHOUSE_TASK_QUEUE
    from orchestrators.temporal.activities import (
        AlertInput,
        BuildModelInput,
        BuildModelOutput,
        IngestInput,
        IngestOutput,
        PipelineActivities,
        PlanInput,
    )
    from orchestrators.temporal.plan import Plan

JOBS = ("full", "ingest", "transform")
#: a ceiling on one unit; a lost worker is noticed by the heartbeat timeout long before this
UNIT_CEILING = timedelta(hours=2)
#: planning, polling the source and alerting are short calls
LIGHT_CEILING = timedelta(minutes=5)


def retry_policy(policy: OrchestrationPolicy) -> RetryPolicy:
    """core's retries as Temporal's: the wait before retry n is ``retry_delay_seconds *
    retry_backoff**n`` up to ``max_retry_delay_seconds`` (core's ``retry_delays()``), no jitter.
    Which errors are not retried is each error's own ``non_retryable`` (activities.py)."""
    return RetryPolicy(
        initial_interval=timedelta(
            seconds=min(policy.retry_delay_seconds, policy.max_retry_delay_seconds)
        ),
        backoff_coefficient=policy.retry_backoff,
        maximum_interval=timedelta(seconds=policy.max_retry_delay_seconds),
        maximum_attempts=policy.unit_retries + 1,  # Temporal's 0 would mean "unlimited"
    )


def honoured(policy: OrchestrationPolicy) -> OrchestrationPolicy:
    """``policy`` when Temporal can honour each of its fields, else a ConfigError naming it (the
    starter calls this before anything starts)."""
    if policy.retry_backoff < 1:
        raise ConfigError(
            f"temporal cannot honour [orchestration] retry_backoff = {policy.retry_backoff}: "
            "Temporal's backoff coefficient must be at least 1 (waits never shrink)"
        )
    return policy


@dataclass
class PipelineInput:
    job: str = "full"
    as_of: str | None = None  # the API clock (YYYY-MM-DD); None = whatever it has published
    partition: str | None = None  # a month YYYY-MM; None = everything up to as_of
    alert: bool = True  # a backfill's months leave the alert to the backfill
    policy: OrchestrationPolicy = field(kw_only=True)  # as the starter read it
    #: may the ingestion units write at once? The starter asks core.warehouse (PostgreSQL yes,
    #: DuckDB no); decided there, not here, so that a replay takes the same path
    parallel_ingestion: bool = False
    #: the task queue of the warehouse units (tests route them to mocked activities)
    warehouse_queue: str = WAREHOUSE_TASK_QUEUE


@dataclass
class Unit:
    """One unit's state as the ``progress`` query reports it (what the CLI prints)."""

    kind: str  # ingest | dbt
    state: str = "pending"  # pending, running, done, failed, skipped
    seconds: float | None = None
    detail: str = ""
    #: the how-manieth unit of the run to end (0: not yet): the follower prints units in the order
    #: they end, which keeps a model after its parents (the query's answer is a JSON object whose
    #: keys the data converter sorts, so its own order says nothing)
    ended: int = 0


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
    policy: OrchestrationPolicy = field(kw_only=True)
    parallel_ingestion: bool = False


@dataclass
class WatchInput:
    last_as_of: str | None = None  # None: the first poll sets the baseline
    job: str = "full"
    policy: OrchestrationPolicy = field(kw_only=True)
    parallel_ingestion: bool = False
    #: whether the source has a clock: a new publication's run is then pinned to it (as of)
    clock: bool = True


async def _alert(pipeline: str, error: BaseException, policy: OrchestrationPolicy) -> None:
    info = workflow.info()
    cause = error
    while getattr(cause, "cause", None) is not None:  # ActivityError -> ApplicationError
        cause = cause.cause
    await workflow.execute_activity_method(
        PipelineActivities.send_failure_alert,
        AlertInput(pipeline, info.workflow_id, info.run_id, getattr(cause, "message", str(cause))),
        start_to_close_timeout=LIGHT_CEILING,
        retry_policy=retry_policy(policy),
    )


def _rows(count: int, new: bool = False) -> str:
    return f"{count:+,} rows" if new else f"{count:,} rows"


@workflow.defn
class PipelineWorkflow:
    def __init__(self) -> None:
        self._units: dict[str, Unit] = {}
        self._ended = 0

    def _end(self, unit: Unit, state: str) -> None:
        self._ended += 1
        unit.state, unit.ended = state, self._ended

    @workflow.query
    def progress(self) -> dict[str, Unit]:
        """Each planned unit (ingestion resource, dbt model) in plan order, with its state."""
        return self._units

    @workflow.run
    async def run(self, request: PipelineInput) -> PipelineResult:
        if request.job not in JOBS:
            raise ApplicationError(f"job must be one of {JOBS}, got {request.job!r}")
        try:
            return await self._run(request)
        except (ActivityError, ApplicationError) as exc:
            if request.alert:
                await _alert(f"pipeline-{request.job}", exc, request.policy)
            raise

    async def _run(self, request: PipelineInput) -> PipelineResult:
        plan: Plan = await workflow.execute_activity_method(
            PipelineActivities.plan,
            PlanInput(as_of=request.as_of, partition=request.partition),
            summary="plan from the canonical graph",
            start_to_close_timeout=LIGHT_CEILING,
            retry_policy=retry_policy(request.policy),
        )
        result = PipelineResult(job=request.job, partition=request.partition)
        if request.job in ("full", "ingest"):
            self._units |= {r: Unit("ingest") for r in plan.resources}
        if request.job in ("full", "transform"):
            self._units |= {step.name: Unit("dbt") for step in plan.models}
        if request.job in ("full", "ingest"):
            result.ingested = await self._ingest(plan, request)
        if request.job in ("full", "transform"):  # the coordination point: after all ingestion
            result.built = await self._transform(plan, request)
        return result

    async def _ingest(self, plan: Plan, request: PipelineInput) -> list[IngestOutput]:
        """One activity per resource: all started at once where the warehouse admits several
        writers (the workers' warehouse slots run them together), else one after another."""

        async def ingest(resource: str) -> IngestOutput:
            unit = self._units[resource]
            unit.state = "running"
            try:
                output = await workflow.execute_activity_method(
                    PipelineActivities.ingest_resource,
                    IngestInput(resource, as_of=request.as_of, partition=request.partition),
                    summary=f"ingest {resource}",
                    task_queue=request.warehouse_queue,
                    start_to_close_timeout=UNIT_CEILING,
                    heartbeat_timeout=timedelta(seconds=request.policy.heartbeat_seconds),
                    retry_policy=retry_policy(request.policy),
                )
            except ActivityError:
                self._end(unit, "failed")
                raise
            unit.seconds = output.seconds
            unit.detail = f"{_rows(output.new_rows, new=True)} ({output.rows_fetched:,} fetched)"
            self._end(unit, "done")
            return output

        if request.parallel_ingestion:
            return list(await asyncio.gather(*(ingest(r) for r in plan.resources)))
        return [await ingest(r) for r in plan.resources]

    async def _transform(self, plan: Plan, request: PipelineInput) -> list[BuildModelOutput]:
        """One activity per model (with its tests), in DAG order; a failure blocks its downstream."""
        built: list[BuildModelOutput] = []
        failures: list[NodeResult] = []
        blocked: set[str] = set()
        for step in plan.models:
            unit = self._units[step.name]
            if blocked & set(step.after):
                blocked.add(step.name)
                self._end(unit, "skipped")
                failures.append(NodeResult(step.name, step.name, "model", "skipped", 0.0))
                continue
            unit.state = "running"
            try:
                output = await workflow.execute_activity_method(
                    PipelineActivities.build_model,
                    BuildModelInput(step.name, step.runs),
                    summary=f"dbt build {step.name} (+{len(step.tests)} tests)",
                    task_queue=request.warehouse_queue,
                    start_to_close_timeout=UNIT_CEILING,
                    heartbeat_timeout=timedelta(seconds=request.policy.heartbeat_seconds),
                    retry_policy=retry_policy(request.policy),
                )
            except ActivityError as exc:
                details = getattr(exc.cause, "details", None) or ()
                failures += [NodeResult(**node) for node in details] or [
                    NodeResult(step.name, step.name, "model", "error", 0.0, str(exc.cause or exc))
                ]
                blocked.add(step.name)
                self._end(unit, "failed")
                continue
            built.append(output)
            model = next((n for n in output.nodes if n.name == step.name), None)
            # the model's own tests (core.lineage's rule), as this build reports them: the tests
            # of its raw tables run in the same build but belong to those tables
            own = set(step.tests)
            tests = sum(1 for n in output.nodes if n.resource_type != "model" and n.name in own)
            unit.seconds = output.seconds
            unit.detail = ", ".join(
                part
                for part in (
                    _rows(model.rows) if model and model.rows is not None else "",
                    f"{tests} tests passed" if tests else "",
                )
                if part
            )
            self._end(unit, "done")
        if failures:
            raise ApplicationError(
                failure_report(failures), type="DbtBuildError", non_retryable=True
            )
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
                        PipelineInput(
                            request.job,
                            request.as_of,
                            partition,
                            alert=False,
                            policy=request.policy,
                            parallel_ingestion=request.parallel_ingestion,
                        ),
                        id=f"{workflow.info().workflow_id}/{partition}",
                        static_summary=f"{request.job} {partition}",
                    )
                )
        except ChildWorkflowError as exc:
            await _alert(f"backfill-{request.job}", exc, request.policy)
            raise
        return results


@workflow.defn
class SourceWatcherWorkflow:
    """Starts a run whenever the source publishes more (the project's freshness probe)."""

    @workflow.run
    async def run(self, request: WatchInput) -> None:
        last = request.last_as_of
        policy = request.policy
        while not workflow.info().is_continue_as_new_suggested():
            status = await workflow.execute_activity_method(
                PipelineActivities.source_status,
                summary="poll source as-of",
                start_to_close_timeout=LIGHT_CEILING,
                retry_policy=retry_policy(policy),
            )
            if last is not None and status.as_of > last:
                as_of = status.as_of[:10]
                await workflow.execute_child_workflow(
                    PipelineWorkflow.run,
                    PipelineInput(
                        request.job,
                        as_of=as_of if request.clock else None,
                        policy=policy,
                        parallel_ingestion=request.parallel_ingestion,
                    ),
                    id=f"{workflow.info().workflow_id}/as-of-{as_of}",
                    static_summary=f"new source data as of {as_of}",
                )
            last = status.as_of
            await workflow.sleep(timedelta(seconds=policy.source_poll_seconds))
        # history stays short
        workflow.continue_as_new(
            WatchInput(
                last,
                request.job,
                policy=policy,
                parallel_ingestion=request.parallel_ingestion,
                clock=request.clock,
            )
        )
