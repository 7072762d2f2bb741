"""The deployments, and the server-side objects the flows need.

* ``quartet-pipeline/full``: the schedule of the policy (cron) and a deployment trigger on
  ``quartet.source.published`` events (its ``as_of`` becomes the run's parameter): an automation
  on the server;
* ``quartet-ingestion/ingestion``, ``quartet-transformation/transformation``: the halves alone;
* ``quartet-backfill/backfill``: a month range as one flow run, an ingestion subflow per month;
* ``quartet-source-watcher/poll``: every ``source_poll_seconds``, compares the source API's
  watermark with the one it saw last (a Prefect variable) and emits ``quartet.source.published``
  when it moved.

``ui`` serves them from its own process; the deployed mode registers them against a ``process``
work pool whose worker starts each flow run in the repository. :func:`provision` creates the
Secret block with the API token and the warehouse's global concurrency limit (1 slot on DuckDB,
one per ingestion unit on PostgreSQL: ``slots.writer_slots``).
"""

from __future__ import annotations

import os

from prefect import flow, get_client, get_run_logger
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.variables import Variable

from core import kit
from core.source_service import api_status
from orchestrators.prefect import (
    NEW_DATA_EVENT,
    SOURCE_RESOURCE_ID,
    TOKEN_BLOCK,
    WAREHOUSE_LIMIT,
    WATERMARK_VARIABLE,
)
from orchestrators.prefect.flows import backfill, ingestion, pipeline, source_url, transformation
from orchestrators.prefect.slots import release_stale_slots, writer_slots

#: every deployment's runs carry it (the crash automation of the deployed mode matches on it)
TAG = "quartet"


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
    """The five deployments; their entrypoints are module paths, resolved from the repository."""
    module = EntrypointType.MODULE_PATH  # loaded as orchestrators.prefect.flows.<flow>
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    common = {"tags": [TAG], "entrypoint_type": module}
    writers = {**common, "concurrency_limit": one_at_a_time}
    return [
        pipeline.to_deployment(
            "full",
            cron=kit.policy().schedule,
            triggers=[
                DeploymentEventTrigger(
                    name="quartet-pipeline on new source data",
                    expect={NEW_DATA_EVENT},
                    match={"prefect.resource.id": SOURCE_RESOURCE_ID},
                    parameters={"as_of": "{{ event.payload.as_of }}"},
                )
            ],
            description="Full pipeline: ingestion, then dbt build. On schedule and on new data.",
            **writers,
        ),
        ingestion.to_deployment("ingestion", **writers),
        transformation.to_deployment("transformation", **writers),
        backfill.to_deployment(
            "backfill", description="A month range: a subflow per month, then dbt.", **writers
        ),
        watch_source.to_deployment("poll", interval=poll_seconds(), **common),
    ]


def provision(token: str) -> None:
    """The Secret block with the source API token, the warehouse writers' concurrency limit sized
    for the configured warehouse, and its slots freed when a run that died left them occupied."""
    Secret(value=token).save(TOKEN_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(WAREHOUSE_LIMIT, limit=writer_slots())
    release_stale_slots()


def poll_seconds() -> float:
    """The watcher's interval: the policy's, or QUARTET_PREFECT_WATCH_SECONDS (tests)."""
    return float(os.environ.get("QUARTET_PREFECT_WATCH_SECONDS", kit.policy().source_poll_seconds))
