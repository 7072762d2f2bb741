"""What ``serve`` serves, and the server-side objects the flows need.

* ``quartet-pipeline/monthly``: cron on the 2nd of each month, 06:00 UTC, and a deployment
  trigger on ``quartet.source.published`` events (its ``as_of`` becomes the run's parameter);
* ``quartet-ingestion/ingestion-only`` and ``quartet-transformation/transformation-only``: the
  two halves alone;
* ``quartet-source-watcher/poll``: every N seconds, compares the source API's watermark with the
  one it saw last (a Prefect variable) and emits ``quartet.source.published`` when it moved.

:func:`provision` creates the Secret block with the API token and the warehouse's global
concurrency limit (1 slot).
"""

from __future__ import annotations

import os

from prefect import flow, get_client, get_run_logger
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.variables import Variable

from core.source_api import api_status
from orchestrators.prefect import (
    NEW_DATA_EVENT,
    SOURCE_RESOURCE_ID,
    TOKEN_BLOCK,
    WAREHOUSE_LIMIT,
    WATERMARK_VARIABLE,
)
from orchestrators.prefect.flows import ingestion, pipeline, source_url, transformation

MONTHLY_CRON = "0 6 2 * *"
#: seconds between two polls of the source API (QUARTET_PREFECT_WATCH_SECONDS overrides)
WATCH_SECONDS = 60


def provision(token: str) -> None:
    """The Secret block with the source API token, and the warehouse writer's concurrency limit."""
    Secret(value=token).save(TOKEN_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(WAREHOUSE_LIMIT, limit=1)


@flow(name="quartet-source-watcher")
def watch_source() -> dict | None:
    """Emit ``quartet.source.published`` when the API's watermark moved since the last poll.

    The first poll only records the watermark (it is what the last run loaded).
    """
    status = api_status(source_url(), Secret.load(TOKEN_BLOCK).get())
    seen = Variable.get(WATERMARK_VARIABLE, default=None)
    if status["watermark"] == seen:
        return None
    Variable.set(WATERMARK_VARIABLE, status["watermark"], overwrite=True)
    if seen is None:
        get_run_logger().info("source watermark %s recorded", status["watermark"])
        return None
    payload = {"as_of": status["as_of"][:10], "watermark": status["watermark"], "previous": seen}
    emit_event(
        event=NEW_DATA_EVENT,
        resource={
            "prefect.resource.id": SOURCE_RESOURCE_ID,
            "prefect.resource.name": "flights API",
        },
        payload=payload,
    )
    get_run_logger().info("new source data up to %s: emitted %s", payload["as_of"], NEW_DATA_EVENT)
    return payload


def deployments() -> list[RunnerDeployment]:
    module = EntrypointType.MODULE_PATH  # loaded as orchestrators.prefect.flows.<flow>
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    watch_seconds = int(os.environ.get("QUARTET_PREFECT_WATCH_SECONDS", WATCH_SECONDS))
    return [
        pipeline.to_deployment(
            "monthly",
            cron=MONTHLY_CRON,
            triggers=[
                DeploymentEventTrigger(
                    name="quartet-pipeline on new source data",
                    expect={NEW_DATA_EVENT},
                    match={"prefect.resource.id": SOURCE_RESOURCE_ID},
                    parameters={"as_of": "{{ event.payload.as_of }}"},
                )
            ],
            concurrency_limit=one_at_a_time,
            description="Full pipeline: ingestion, then dbt build. Monthly, and on new source data.",
            tags=["quartet"],
            entrypoint_type=module,
        ),
        ingestion.to_deployment(
            "ingestion-only",
            concurrency_limit=one_at_a_time,
            tags=["quartet"],
            entrypoint_type=module,
        ),
        transformation.to_deployment(
            "transformation-only",
            concurrency_limit=one_at_a_time,
            tags=["quartet"],
            entrypoint_type=module,
        ),
        watch_source.to_deployment(
            "poll", interval=watch_seconds, tags=["quartet"], entrypoint_type=module
        ),
    ]
