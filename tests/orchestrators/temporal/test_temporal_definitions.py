"""The definitions load: workflows pass the sandbox, the plan's lineage is the canonical graph."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporal_helpers import deployment
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from core import lineage, settings
from core.ingestion import load_config
from orchestrators.temporal import TASK_QUEUE, WAREHOUSE_TASK_QUEUE
from orchestrators.temporal.__main__ import plan_graph
from orchestrators.temporal.activities import PipelineActivities, build_plan
from orchestrators.temporal.starter import connect, ensure_schedule
from orchestrators.temporal.worker import workers
from orchestrators.temporal.workflows import PipelineInput, PipelineWorkflow


def test_workers_load_the_workflows_in_the_sandbox(temporal_server) -> None:
    async def build():
        client = await connect(temporal_server.address)
        with ThreadPoolExecutor(1) as executor:
            queue, warehouse = workers(client, PipelineActivities("http://x", "t"), executor)
        return queue, warehouse

    queue, warehouse = asyncio.run(build())  # Worker() validates every workflow in the sandbox
    assert queue.config()["task_queue"] == TASK_QUEUE
    assert warehouse.config()["task_queue"] == WAREHOUSE_TASK_QUEUE
    assert warehouse.config()["max_concurrent_activities"] == 1  # one writer at a time


def test_workflow_plan_lineage_equals_canonical(quartet_home) -> None:
    assert lineage.canonical().difference(plan_graph()) == []


def test_plan_has_one_unit_per_resource_and_model_in_dag_order(quartet_home) -> None:
    plan = build_plan()
    assert sorted(plan.resources) == sorted(load_config().resources)
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


def test_monthly_schedule_fires_on_the_first_of_each_month(temporal_server) -> None:
    async def main():
        client = await connect(temporal_server.address)
        handle = await ensure_schedule(client)
        await ensure_schedule(client)  # idempotent: updates the existing schedule
        return await handle.describe()

    description = asyncio.run(main())
    upcoming = description.info.next_action_times
    assert upcoming and all(t.day == 1 and t.hour == 6 for t in upcoming)
    months = [(t.year, t.month) for t in upcoming[:2]]
    assert months[1] == (months[0][0] + (months[0][1] == 12), months[0][1] % 12 + 1)
    action = description.schedule.action
    assert action.workflow == "PipelineWorkflow" and action.task_queue == TASK_QUEUE


def test_bad_input_fails_at_once_without_retries(temporal_server, source_api, fresh_home) -> None:
    async def main():
        async with deployment(temporal_server, source_api.url, source_api.token) as client:
            return await client.execute_workflow(
                PipelineWorkflow.run,
                PipelineInput(partition="2014-05"),
                id="bad-input",
                task_queue=TASK_QUEUE,
            )

    with pytest.raises(WorkflowFailureError) as failure:
        asyncio.run(main())
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "ConfigError"
    assert activity_error.cause.non_retryable
    assert "outside the configured range" in str(activity_error.cause)
    assert activity_error.retry_state is not None  # and it was not retried:
    assert "NON_RETRYABLE" in activity_error.retry_state.name
