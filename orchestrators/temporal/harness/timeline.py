"""The last dev-mode run's units as Temporal's workflow history recorded them (``lab/timeline.py``).

A dev-mode run starts a dev server on the home's SQLite file (``.quartet/temporal/temporal.db``)
and stops it at the end; the history stays in the file. ``python -m
orchestrators.temporal.harness.timeline --home H`` starts the dev server on that file again (the same
``dev_server`` as ``quartet run temporal``, stopped before it returns), reads the newest
PipelineWorkflow's history and prints JSON: the workflow's start and close, and one unit per
ingestion or dbt activity, from ActivityTaskStarted to ActivityTaskCompleted (with the time it
was scheduled: the wait for a worker between the two is the orchestrator's).
"""

from __future__ import annotations

import asyncio
import json

from lab.timeline import reader_home

#: the activities that are units: which field of their input names the unit, and its kind
UNITS = {"ingest_resource": ("resource", "ingest"), "build_model": ("model", "dbt")}


async def read(address: str) -> dict:
    from temporalio.api.enums.v1 import EventType

    from orchestrators.temporal.harness.run import connect

    client = await connect(address)
    executions = [e async for e in client.list_workflows("WorkflowType = 'PipelineWorkflow'")]
    if not executions:
        raise SystemExit("no PipelineWorkflow in this home's Temporal history")
    newest = max(executions, key=lambda e: e.start_time)
    handle = client.get_workflow_handle(newest.id, run_id=newest.run_id)
    scheduled: dict[int, dict] = {}
    started: dict[int, float] = {}
    units = []
    async for event in handle.fetch_history_events():
        when = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name in UNITS:
                field, kind = UNITS[attributes.activity_type.name]
                payload = json.loads(attributes.input.payloads[0].data)
                scheduled[event.event_id] = {
                    "unit": payload[field],
                    "kind": kind,
                    "scheduled": when,
                }
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[event.activity_task_started_event_attributes.scheduled_event_id] = when
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            key = event.activity_task_completed_event_attributes.scheduled_event_id
            if key in scheduled:
                units.append({**scheduled[key], "start": started[key], "end": when})
    return {
        "source": "Temporal's workflow history (the dev server's SQLite file, served again)",
        "id": f"{newest.id}/{newest.run_id}",
        "status": newest.status.name if newest.status else None,
        "start": newest.start_time.timestamp(),
        "end": newest.close_time.timestamp() if newest.close_time else None,
        "units": units,
    }


def main(argv: list[str] | None = None) -> int:
    reader_home(argv, prog="python -m orchestrators.temporal.harness.timeline")

    from orchestrators.temporal.harness.run import dev_server

    with dev_server() as server:
        found = asyncio.run(read(server.address))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    from core.kit import exit_process

    exit_process(main())
