"""Jobs, the monthly schedule, the source API sensor, and the failure alert.

* ``full_pipeline``, ``dlt_ingestion``, ``dbt_transformation``: partitioned asset jobs (their
  ops retry as the [orchestration] policy says, ``policy.py``).
* ``monthly_full_pipeline``: a schedule built from the partitioned job on the policy's cron
  (each month's run loads the month that just ended).
* ``source_api_as_of``: polls the API's clock and asks for a run of every month that has new data.
* ``alert_on_run_failure``: a run-failure sensor posting core's alert payload to ALERT_WEBHOOK_URL.
"""

import os
from collections.abc import Iterator

import dagster as dg

from core import alerts
from core.ingestion import months_between
from orchestrators.dagster.assets import dbt_models
from orchestrators.dagster.partitions import MONTHLY
from orchestrators.dagster.policy import monthly_offset
from orchestrators.dagster.project import NAME, POLICY
from orchestrators.dagster.resources import SourceAPI

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Ingest every resource of the source API, then dbt build (models and tests).",
)
dlt_ingestion = dg.define_asset_job(
    "dlt_ingestion",
    selection=dg.AssetSelection.groups("raw"),
    description="Load the raw layer from the source API (one op per dlt resource).",
)
dbt_transformation = dg.define_asset_job(
    "dbt_transformation",
    selection=dg.AssetSelection.assets(dbt_models),
    description="dbt build over what the raw layer holds: models, data tests, unit tests.",
)
jobs = [full_pipeline, dlt_ingestion, dbt_transformation]


monthly_full_pipeline = dg.build_schedule_from_partitioned_job(
    full_pipeline,
    name="monthly_full_pipeline",
    **monthly_offset(POLICY),
    description="On the 1st of every month, run the full pipeline for the month that ended.",
)


def as_of_config(as_of: str | None) -> dict:
    """Run config giving a run its API clock (the ``api_clock`` resource)."""
    return {"resources": {"api_clock": {"config": {"as_of": as_of}}}} if as_of else {}


def months_to_run(first: str, last: str) -> list[str]:
    """The partitions from the month of ``first`` to the month of ``last`` (ISO dates)."""
    keys = MONTHLY.get_partition_keys()
    return [m for m in months_between(first[:7], last[:7]) if m in keys] or keys[-1:]


@dg.sensor(
    job=full_pipeline,
    minimum_interval_seconds=int(POLICY.source_poll_seconds),  # whole seconds (policy.py)
    description="Starts a run for every month the source API published new data in.",
)
def source_api_as_of(
    context: dg.SensorEvaluationContext, source_api: SourceAPI
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    as_of = source_api.status()["as_of"][:10]
    previous = context.cursor
    if previous is None:
        context.update_cursor(as_of)
        yield dg.SkipReason(f"watching the source API from as-of {as_of}")
        return
    if as_of <= previous:
        yield dg.SkipReason(f"no new data: the source API is still as of {as_of}")
        return
    for month in months_to_run(previous, as_of):  # the last month seen may have grown too
        yield dg.RunRequest(
            run_key=f"{month}@{as_of}",
            partition_key=month,
            run_config=as_of_config(as_of),
            tags={"quartet/as_of": as_of},
        )
    context.update_cursor(as_of)


def webserver_url() -> str:
    return os.environ.get("QUARTET_DAGSTER_URL", "http://127.0.0.1:3000")


def failure_payload(context: dg.RunFailureSensorContext) -> dict:
    run = context.dagster_run
    steps = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
        for event in context.get_step_failure_events()
        if event.event_specific_data and event.event_specific_data.error
    ]
    return alerts.alert_payload(
        NAME,
        run.job_name,
        run.run_id,
        "\n".join(steps) or context.failure_event.message or "run failed",
        url=f"{webserver_url()}/runs/{run.run_id}",
    )


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="POSTs a failure alert to ALERT_WEBHOOK_URL (when set) for every failed run.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    if alerts.send_alert(failure_payload(context)):
        context.log.info(f"alert sent for run {context.dagster_run.run_id}")


sensors = [source_api_as_of, alert_on_run_failure]
schedules = [monthly_full_pipeline]
