"""Helpers of the Temporal tests: an in-process worker, activity attempts from history."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator

from temporalio.client import Client, WorkflowHandle

from orchestrators.temporal.activities import PipelineActivities
from orchestrators.temporal.harness.run import Server, connect
from orchestrators.temporal.worker import workers


@contextlib.asynccontextmanager
async def deployment(
    server: Server, url: str, token: str, ui_url: str | None = None
) -> AsyncIterator[Client]:
    """A client and this process's worker (both task queues) for the duration."""
    client = await connect(server.address)
    async with workers(client, PipelineActivities(url, token, ui_url=ui_url)):
        yield client


async def activity_runs(handle: WorkflowHandle) -> list[dict]:
    """Each activity attempt of a workflow: type, input, attempt, worker, started/closed times."""
    scheduled: dict[int, dict] = {}
    runs: list[dict] = []
    started: dict[int, dict] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = {
                "type": attrs.activity_type.name,
                "input": attrs.input.payloads[0].data.decode() if attrs.input.payloads else "",
            }
        elif event.HasField("activity_task_started_event_attributes"):
            attrs = event.activity_task_started_event_attributes
            run = {
                **scheduled[attrs.scheduled_event_id],
                "attempt": attrs.attempt,
                "identity": attrs.identity,
                "started": event.event_time.ToDatetime(),
            }
            started[attrs.scheduled_event_id] = run
            runs.append(run)
        for field in (
            "activity_task_completed_event_attributes",
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
        ):
            if event.HasField(field):
                run = started.get(getattr(event, field).scheduled_event_id)
                if run is not None:
                    run["closed"] = event.event_time.ToDatetime()
                    run["outcome"] = field.split("_")[2]
    return runs


def texts(value) -> list[str]:
    """Every string of a JSON answer of Temporal's HTTP API, each payload's data decoded too (the
    API sends it base64: a token inside would not show in the raw text)."""
    if isinstance(value, dict):
        found = [t for v in value.values() for t in texts(v)]
        data = value.get("data")
        if isinstance(data, str) and "metadata" in value:
            found.append(base64.b64decode(data).decode(errors="replace"))
        return found
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return [value] if isinstance(value, str) else []
