"""The deployments, and the server-side objects the flows need.

* ``quartet-pipeline/full``: the schedule of the policy (cron) and, for a project that declares a
  freshness probe, a deployment trigger on ``quartet.source.published`` events (an automation on
  the server; for a source with a clock, the event's ``as_of`` becomes the run's parameter);
* ``quartet-ingestion/ingestion``, ``quartet-transformation/transformation``: the halves alone;
* ``quartet-backfill/backfill``: a range of partitions (months or days) as one flow run, an
  ingestion subflow per partition; only for a project that has partitions;
* ``quartet-source-watcher/poll``: every ``source_poll_seconds``, asks the project's freshness
  probe for the source's newest publication, compares it with the one it saw last (a Prefect
  variable) and emits ``quartet.source.published`` when it moved; only for a project that
  declares a probe (there is nothing to poll otherwise).

``ui`` serves them from its own process; the deployed mode registers them against a ``process``
work pool whose worker starts each flow run in the repository. :func:`provision` creates the
Secret block with the demo API's token (for a project whose source is that API) and the
warehouse's global concurrency limit (1 slot on DuckDB, one per ingestion unit on PostgreSQL:
``slots.writer_slots``).
"""

from __future__ import annotations

import os

from prefect import flow, get_client, get_run_logger
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.variables import Variable

from core import kit, project
from core.failures import ConfigError
from orchestrators.prefect import (
    NEW_DATA_EVENT,
    SOURCE_RESOURCE_ID,
    TOKEN_BLOCK,
    WAREHOUSE_LIMIT,
    WATERMARK_VARIABLE,
)
from orchestrators.prefect.flows import (
    UNITS,
    backfill,
    ingestion,
    pipeline,
    source_api,
    transformation,
)
from orchestrators.prefect.slots import release_stale_slots, writer_slots

#: every deployment's runs carry it (the crash automation of the deployed mode matches on it)
TAG = "quartet"


@flow(name="quartet-source-watcher")
def watch_source() -> dict | None:
    """Emit ``quartet.source.published`` when the source's newest publication (the project's
    freshness probe) moved since the last poll.

    The first poll only records it (it is what the last run loaded).
    """
    chosen = project.current()
    probe = project.freshness(chosen)
    if probe is None:
        raise ConfigError(
            f"the project {chosen.name} declares no freshness probe ([freshness] probe in "
            f"{chosen.path}): the source watcher has nothing to poll"
        )
    published = probe(*source_api())
    seen = Variable.get(WATERMARK_VARIABLE, default=None)
    if published is None or published == seen:  # nothing published yet, or nothing new
        return None
    Variable.set(WATERMARK_VARIABLE, published, overwrite=True)
    if seen is None:
        get_run_logger().info("source published through %s: recorded", published)
        return None
    payload = {"as_of": published[:10], "published": published, "previous": seen}
    emit_event(
        event=NEW_DATA_EVENT,
        resource={
            "prefect.resource.id": SOURCE_RESOURCE_ID,
            "prefect.resource.name": f"{chosen.name} source",
        },
        payload=payload,
    )
    get_run_logger().info("new source data up to %s: emitted %s", payload["as_of"], NEW_DATA_EVENT)
    return payload


def deployments() -> list[RunnerDeployment]:
    """The project's deployments (five for a project with partitions and a freshness probe);
    their entrypoints are module paths, resolved from the repository."""
    chosen = project.current()
    module = EntrypointType.MODULE_PATH  # loaded as orchestrators.prefect.flows.<flow>
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    common = {"tags": [TAG], "entrypoint_type": module}
    writers = {**common, "concurrency_limit": one_at_a_time}
    triggers = []
    if chosen.freshness_probe:  # without a probe nothing says the source has published more
        triggers.append(
            DeploymentEventTrigger(
                name="quartet-pipeline on new source data",
                expect={NEW_DATA_EVENT},
                match={"prefect.resource.id": SOURCE_RESOURCE_ID},
                # a source with a clock is read as of the publication; any other, as it stands
                parameters={"as_of": "{{ event.payload.as_of }}"} if chosen.clock else None,
            )
        )
    found = [
        pipeline.to_deployment(
            "full",
            cron=kit.policy().schedule,
            triggers=triggers,
            description="Full pipeline: ingestion, then dbt build. "
            + ("On schedule and on new data." if triggers else "On schedule."),
            **writers,
        ),
        ingestion.to_deployment("ingestion", **writers),
        transformation.to_deployment("transformation", **writers),
    ]
    if chosen.partitions.enabled:  # a project without partitions has nothing to backfill
        unit = UNITS[chosen.partitions.scheme]
        found.append(
            backfill.to_deployment(
                "backfill",
                description=f"A {unit} range: a subflow per {unit}, then dbt.",
                **writers,
            )
        )
    if chosen.freshness_probe:
        found.append(watch_source.to_deployment("poll", interval=poll_seconds(), **common))
    return found


def provision(token: str) -> None:
    """The Secret block with the demo API's token (for a project whose source is that API), the
    warehouse writers' concurrency limit sized for the configured warehouse, and its slots freed
    when a run that died left them occupied."""
    if project.current().demo_api:
        Secret(value=token).save(TOKEN_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(WAREHOUSE_LIMIT, limit=writer_slots())
    release_stale_slots()


def poll_seconds() -> float:
    """The watcher's interval: the policy's, or QUARTET_PREFECT_WATCH_SECONDS (tests)."""
    return float(os.environ.get("QUARTET_PREFECT_WATCH_SECONDS", kit.policy().source_poll_seconds))
