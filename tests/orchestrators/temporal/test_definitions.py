"""Fast tier: the definitions load, the plan is the canonical graph, the workflow logic holds.

No pipeline runs here: the workflow logic is tested on the dev server with mocked activities
(as samples-python's ``hello_activity_test.py`` does), in seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
from temporal_helpers import deployment
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from core import kit, lineage, settings
from core.dbt import failure_report
from core.pipeline import IngestionError
from core.source import MalformedRecordError
from orchestrators.temporal import TASK_QUEUE
from orchestrators.temporal.activities import (
    AlertInput,
    BuildModelInput,
    BuildModelOutput,
    IngestInput,
    IngestOutput,
    ModelStep,
    NodeOutcome,
    Plan,
    PlanInput,
    build_plan,
    ingestion_failure,
)
from orchestrators.temporal.lineage import declared_graph
from orchestrators.temporal.starter import connect, ensure_schedule, run_policy
from orchestrators.temporal.workflows import PipelineInput, PipelineWorkflow, RunPolicy
from tests.helpers import expected


def test_workflow_plan_lineage_equals_canonical(quartet_home) -> None:
    assert lineage.canonical().difference(declared_graph()) == []


def test_plan_has_one_unit_per_resource_and_model_in_dag_order(quartet_home) -> None:
    plan = build_plan()
    assert sorted(plan.resources) == sorted(expected().resources)
    assert sorted(s.name for s in plan.models) == sorted(expected().models)
    done: set[str] = set()
    for step in plan.models:
        assert set(step.after) <= done, f"{step.name} planned before {set(step.after) - done}"
        done.add(step.name)
    # stg_flights' relationships test reads stg_airlines: it must be built first
    assert "stg_airlines" in next(s for s in plan.models if s.name == "stg_flights").after


def test_lineage_command_prints_the_plan_graph(quartet_home) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrators.temporal", "lineage", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.REPO_ROOT,
    ).stdout
    assert lineage.canonical().difference(lineage.Graph.from_json(json.loads(out))) == []


def test_policy_numbers_reach_the_workflow_input() -> None:
    policy, configured = run_policy(), kit.policy()
    assert policy.heartbeat_seconds == configured.heartbeat_seconds
    assert policy.retry().maximum_attempts == configured.unit_retries + 1
    assert policy.retry().initial_interval.total_seconds() == configured.retry_delay_seconds
    assert {"ConfigError", "DbtBuildError", "MalformedRecordError", "AuthError"} <= set(
        policy.retry().non_retryable_error_types
    )


def test_errors_no_retry_fixes_are_not_retryable() -> None:
    def failed(cause: Exception) -> IngestionError:
        try:
            try:
                raise cause
            except Exception as exc:
                raise IngestionError(f"ingesting flights failed: {exc}") from exc
        except IngestionError as error:
            return error

    malformed = ingestion_failure(failed(MalformedRecordError("no primary key 'id'")))
    assert (malformed.type, malformed.non_retryable) == ("MalformedRecordError", True)
    auth = ingestion_failure(failed(OSError("401 Client Error: Unauthorized")))
    assert (auth.type, auth.non_retryable) == ("AuthError", True)
    transient = ingestion_failure(failed(ConnectionError("connection reset by peer")))
    assert not transient.non_retryable


def test_monthly_schedule_follows_the_configured_cron(temporal_server) -> None:
    async def main():
        client = await connect(temporal_server.address)
        handle = await ensure_schedule(client, schedule_id=f"test-{uuid.uuid4()}")
        await ensure_schedule(client, schedule_id=handle.id)  # idempotent: updates it
        description = await handle.describe()
        await handle.delete()
        return description

    description = asyncio.run(main())
    minute, hour, day = (int(f) for f in kit.policy().schedule.split()[:3])  # "0 0 1 * *"
    upcoming = description.info.next_action_times
    assert upcoming and all((t.day, t.hour, t.minute) == (day, hour, minute) for t in upcoming)
    months = [(t.year, t.month) for t in upcoming[:2]]
    assert months[1] == (months[0][0] + (months[0][1] == 12), months[0][1] % 12 + 1)
    action = description.schedule.action
    assert action.workflow == "PipelineWorkflow" and action.task_queue == TASK_QUEUE


def test_bad_input_fails_at_once_without_retries(temporal_server, fresh_home) -> None:
    async def main():  # the flags are checked before the source API is ever asked
        async with deployment(temporal_server, "http://127.0.0.1:9", "unused") as client:
            return await client.execute_workflow(
                PipelineWorkflow.run,
                PipelineInput(partition="2014-05", policy=run_policy()),
                id=f"bad-input-{uuid.uuid4()}",
                task_queue=TASK_QUEUE,
            )

    with pytest.raises(WorkflowFailureError) as failure:
        asyncio.run(main())
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "ConfigError"
    assert "outside the configured range" in str(activity_error.cause)
    assert "NON_RETRYABLE" in activity_error.retry_state.name  # and it was not retried


# -- workflow logic with mocked activities ----------------------------------------------------

PLAN = Plan(
    resources=["airlines", "flights"],
    raw_tests={},
    models=[
        ModelStep("stg_airlines", "staging", ["raw.airlines"], [], ["unique_stg_airlines_carrier"]),
        ModelStep("stg_flights", "staging", ["raw.flights"], ["stg_airlines"], ["not_null_id"]),
        ModelStep("dim_carriers", "marts", ["stg_airlines"], ["stg_airlines"], []),
        ModelStep("fct_flights", "marts", ["stg_flights"], ["stg_flights"], []),
    ],
)
BROKEN = {"name": "not_null_id", "resource_type": "test", "status": "fail", "seconds": 0.1}


class Mocks:
    def __init__(self, fail: str | None = None) -> None:
        self.fail, self.built, self.alerts, self.ingested = fail, [], [], []

    def activities(self):
        @activity.defn(name="plan")
        async def plan(_: PlanInput) -> Plan:
            return PLAN

        @activity.defn(name="ingest_resource")
        async def ingest_resource(request: IngestInput) -> IngestOutput:
            self.ingested.append(request.resource)
            return IngestOutput(request.resource, 10, 10, 0.1)

        @activity.defn(name="build_model")
        async def build_model(request: BuildModelInput) -> BuildModelOutput:
            self.built.append(request.model)
            if request.model == self.fail:
                node = {"unique_id": "test.x.not_null_id", **BROKEN, "message": "Got 3 results"}
                raise ApplicationError("failed", node, type="DbtBuildError", non_retryable=True)
            nodes = [NodeOutcome(request.model, "model", "success", 0.1, 10)]
            return BuildModelOutput(request.model, nodes, 0.1)

        @activity.defn(name="send_failure_alert")
        async def send_failure_alert(request: AlertInput) -> bool:
            self.alerts.append(request.error)
            return True

        return [plan, send_failure_alert], [ingest_resource, build_model]

    async def run(self, server) -> tuple[object, dict]:
        client = await connect(server.address)
        queue = f"mocked-{uuid.uuid4()}"
        light, warehouse = self.activities()
        policy = RunPolicy(
            retry_delay_seconds=0.1, heartbeat_seconds=5, warehouse_queue=f"{queue}-warehouse"
        )
        async with (
            Worker(client, task_queue=queue, workflows=[PipelineWorkflow], activities=light),
            Worker(client, task_queue=policy.warehouse_queue, activities=warehouse),
        ):
            handle = await client.start_workflow(
                PipelineWorkflow.run,
                PipelineInput(policy=policy),
                id=f"mocked-{uuid.uuid4()}",
                task_queue=queue,
            )
            try:
                outcome = await handle.result()
            except WorkflowFailureError as exc:
                outcome = exc
            return outcome, await handle.query(PipelineWorkflow.progress)


def test_workflow_builds_every_model_in_plan_order(temporal_server) -> None:
    mocks = Mocks()
    result, units = asyncio.run(mocks.run(temporal_server))
    assert mocks.built == [s.name for s in PLAN.models]
    assert sorted(mocks.ingested) == PLAN.resources
    assert [i.resource for i in result.ingested] == PLAN.resources
    assert {name: unit.state for name, unit in units.items()} == dict.fromkeys(
        [*PLAN.resources, *(s.name for s in PLAN.models)], "done"
    )
    assert units["flights"].detail == "+10 rows (10 fetched)"
    assert mocks.alerts == []


def test_a_failing_test_blocks_only_downstream_and_reports_in_cores_words(temporal_server) -> None:
    from core.dbt import NodeResult

    mocks = Mocks(fail="stg_flights")
    error, units = asyncio.run(mocks.run(temporal_server))
    assert isinstance(error, WorkflowFailureError)
    assert mocks.built == ["stg_airlines", "stg_flights", "dim_carriers"]  # not fct_flights
    expected_report = failure_report(
        [
            NodeResult("test.x.not_null_id", message="Got 3 results", **BROKEN),
            NodeResult("fct_flights", "fct_flights", "model", "skipped", 0.0),
        ]
    )
    assert error.cause.message == expected_report
    assert units["fct_flights"].state == "skipped" and units["dim_carriers"].state == "done"
    assert mocks.alerts == [expected_report]  # the alert carries the same words


def test_follow_prints_each_unit_once_in_the_order_units_ended(monkeypatch) -> None:
    """The ``progress`` query's answer reaches the CLI with its keys sorted (the SDK's JSON
    converter): the follower orders by each unit's end rank, so a model follows its parents."""
    from orchestrators.temporal import starter
    from orchestrators.temporal.workflows import Unit

    first = {  # alphabetical, as the converter hands it over; stg_airports ended first
        "dim_airports": Unit("dbt", "done", 0.2, "2 tests passed", ended=2),
        "stg_airports": Unit("dbt", "done", 0.1, "2 tests passed", ended=1),
        "stg_flights": Unit("dbt", "running"),
    }
    last = {**first, "stg_flights": Unit("dbt", "failed", ended=3)}
    polls, closed = iter([first, last]), iter([False, True])

    async def progress(_handle):
        return next(polls)

    async def is_closed(_handle):
        return next(closed)

    class Handle:
        id = "quartet-full"

        async def result(self) -> None:
            return None

    monkeypatch.setattr(starter, "_progress", progress)
    monkeypatch.setattr(starter, "_closed", is_closed)
    lines: list[str] = []
    asyncio.run(starter.follow(None, Handle(), PipelineInput(), say=lines.append))
    assert [(line.split()[2], line.split()[-1]) for line in lines] == [
        ("stg_airports", "passed"),
        ("dim_airports", "passed"),
        ("stg_flights", "FAILED"),
    ]
