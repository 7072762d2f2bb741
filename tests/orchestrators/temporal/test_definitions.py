"""Fast tier: the definitions load, the plan is the canonical graph, the workflow logic holds.

No pipeline runs here: the workflow logic is tested on the dev server with mocked activities
(as samples-python's ``hello_activity_test.py`` does), in seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
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
from core.failures import ConfigError
from core.ingestion import OrchestrationPolicy
from orchestrators.temporal import TASK_QUEUE
from orchestrators.temporal.activities import (
    AlertInput,
    BuildModelInput,
    BuildModelOutput,
    IngestInput,
    IngestOutput,
    NodeOutcome,
    PlanInput,
    application_error,
)
from orchestrators.temporal.harness.lineage import declared_graph
from orchestrators.temporal.harness.run import connect
from orchestrators.temporal.plan import ModelStep, Plan, build_plan
from orchestrators.temporal.starter import ensure_schedule, placement, workflow_input
from orchestrators.temporal.workflows import (
    PipelineInput,
    PipelineWorkflow,
    honoured,
    retry_policy,
)
from tests.failure_cases import CASES
from tests.helpers import expected


def test_workflow_plan_lineage_equals_canonical(quartet_home) -> None:
    assert lineage.canonical().difference(declared_graph()) == []


def test_plan_has_one_unit_per_resource_and_model_in_ref_order(quartet_home) -> None:
    plan = build_plan()
    assert sorted(plan.resources) == sorted(expected().resources)
    assert sorted(s.name for s in plan.models) == sorted(expected().models)
    built: set[str] = set()
    for step in plan.models:
        assert set(step.after) <= built, f"{step.name} planned before {set(step.after) - built}"
        built.add(step.name)
    # every test runs once all it reads is built: stg_flights' relationships test reads
    # stg_airlines, so it runs in a build planned after stg_airlines'
    position = {step.name: i for i, step in enumerate(plan.models)}
    runs_in = {t: step.name for step in plan.models for t in step.runs}
    relationship = next(t for t in runs_in if t.startswith("relationships_stg_flights"))
    assert position[runs_in[relationship]] > position["stg_airlines"]


def _manifest_with_a_test_cycle() -> dict:
    """jaffle-shop's shape: orders refs customers, order_items refs orders, and relationships
    tests point both ways (customers -> orders, orders -> order_items): a cycle through tests."""

    def model(name: str, *refs: str) -> dict:
        return {
            "resource_type": "model",
            "name": name,
            "config": {"schema": "marts"},
            "depends_on": {"nodes": [f"model.shop.{r}" for r in refs]},
        }

    def relationships(name: str, attached: str, other: str) -> dict:
        return {
            "resource_type": "test",
            "name": name,
            "attached_node": f"model.shop.{attached}",
            "depends_on": {"nodes": [f"model.shop.{other}", f"model.shop.{attached}"]},
        }

    nodes = {
        "model.shop.customers": model("customers"),
        "model.shop.orders": model("orders", "customers"),
        "model.shop.order_items": model("order_items", "orders"),
        "test.shop.customer_has_orders": relationships(
            "customer_has_orders", "customers", "orders"
        ),
        "test.shop.order_has_items": relationships("order_has_items", "orders", "order_items"),
        "test.shop.item_order": relationships("item_order", "order_items", "orders"),
    }
    return {"nodes": {k: v for k, v in nodes.items()}, "sources": {}, "unit_tests": {}}


def test_a_cycle_through_relationships_tests_plans_in_ref_order(monkeypatch) -> None:
    monkeypatch.setattr(lineage, "raw_tables", lambda: [])
    plan = build_plan(_manifest_with_a_test_cycle())
    steps = {step.name: step for step in plan.models}
    assert [step.name for step in plan.models] == ["customers", "orders", "order_items"]
    # each test belongs to its model (core.lineage's rule) ...
    assert steps["customers"].tests == ["customer_has_orders"]
    assert steps["orders"].tests == ["order_has_items"]
    # ... and runs in the build of the last model it reads
    assert steps["customers"].runs == []
    assert steps["orders"].runs == ["customer_has_orders"]
    assert steps["order_items"].runs == ["item_order", "order_has_items"]


def test_lineage_command_prints_the_plan_graph(quartet_home) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrators.temporal", "lineage", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.REPO_ROOT,
    ).stdout
    assert lineage.canonical().difference(lineage.Graph.from_json(json.loads(out))) == []


# -- one failure policy, one orchestration policy ---------------------------------------------


@pytest.mark.parametrize(
    ("make", "retry"), [(make, retry) for _, make, retry in CASES], ids=[c[0] for c in CASES]
)
def test_activity_failures_are_retried_as_core_says(make, retry) -> None:
    """The activities' mapping (failures_mapped -> application_error) answers as core does."""
    error = application_error(make())
    assert error.non_retryable is (not retry)


def test_the_retry_policy_is_the_configured_one() -> None:
    configured = kit.policy()
    inputs = workflow_input(kit.RunRequest(name="temporal", as_of="2013-01-31"))
    assert inputs.policy == configured  # core's object itself, not a copy with its own defaults
    policy = retry_policy(inputs.policy)
    assert policy.maximum_attempts == configured.unit_retries + 1
    assert delays(policy, configured.unit_retries) == configured.retry_delays()
    assert not policy.non_retryable_error_types  # each error says it itself


def delays(policy, retries: int) -> list[float]:
    """The waits Temporal's RetryPolicy makes before each retry (its documented formula)."""
    initial, cap = policy.initial_interval.total_seconds(), policy.maximum_interval.total_seconds()
    return [min(initial * policy.backoff_coefficient**n, cap) for n in range(retries)]


@pytest.mark.parametrize(
    "changed",
    [
        {"retry_backoff": 3.0},
        {"retry_delay_seconds": 5.0},
        {"max_retry_delay_seconds": 3.0},
        {"unit_retries": 5},
        {"retry_delay_seconds": 50.0},  # above the cap: every wait is the cap, as in core
    ],
)
def test_a_changed_retry_field_changes_the_retry_delays(changed) -> None:
    policy = dataclasses.replace(OrchestrationPolicy(), **changed)
    retry = retry_policy(honoured(policy))
    assert delays(retry, policy.unit_retries) == policy.retry_delays()
    assert retry.maximum_attempts == policy.unit_retries + 1
    assert delays(retry, policy.unit_retries) != OrchestrationPolicy().retry_delays()


def test_a_field_temporal_cannot_honour_is_refused_by_name() -> None:
    with pytest.raises(
        ConfigError, match=r"temporal cannot honour \[orchestration\] retry_backoff"
    ):
        honoured(dataclasses.replace(OrchestrationPolicy(), retry_backoff=0.5))


def test_quartet_run_refuses_it_with_exit_2(tmp_path) -> None:
    config = tmp_path / "ingestion.toml"
    config.write_text(
        settings.INGESTION_CONFIG.read_text().replace("retry_backoff = 2.0", "retry_backoff = 0.5")
    )
    assert "retry_backoff = 0.5" in config.read_text()
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrators.temporal", "run", "--as-of", "2013-01-31"],
        capture_output=True,
        text=True,
        cwd=settings.REPO_ROOT,
        env={**os.environ, "QUARTET_INGESTION_CONFIG": str(config), "QUARTET_HOME": str(tmp_path)},
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == [
        "quartet run temporal: temporal cannot honour [orchestration] retry_backoff = 0.5: "
        "Temporal's backoff coefficient must be at least 1 (waits never shrink)"
    ]


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
                PipelineInput(partition="2014-05", **placement()),
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
        ModelStep("stg_flights", "staging", ["raw.flights"], [], ["not_null_id"], ["not_null_id"]),
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
        policy = dataclasses.replace(kit.policy(), retry_delay_seconds=0.1, heartbeat_seconds=5)
        request = PipelineInput(policy=policy, warehouse_queue=f"{queue}-warehouse")
        async with (
            Worker(client, task_queue=queue, workflows=[PipelineWorkflow], activities=light),
            Worker(client, task_queue=request.warehouse_queue, activities=warehouse),
        ):
            handle = await client.start_workflow(
                PipelineWorkflow.run,
                request,
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
    from orchestrators.temporal.harness import run
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

    monkeypatch.setattr(run, "_progress", progress)
    monkeypatch.setattr(run, "_closed", is_closed)
    lines: list[str] = []
    asyncio.run(run.follow(None, Handle(), PipelineInput(policy=kit.policy()), say=lines.append))
    assert [(line.split()[2], line.split()[-1]) for line in lines] == [
        ("stg_airports", "passed"),
        ("dim_airports", "passed"),
        ("stg_flights", "FAILED"),
    ]
