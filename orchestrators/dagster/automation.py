"""Jobs, the schedule, the freshness sensor, and the failure alert.

* ``full_pipeline``, ``dlt_ingestion``, ``dbt_transformation``: asset jobs, partitioned as the
  project is (their ops retry as the [orchestration] policy says, ``policy.py``).
* ``full_pipeline_schedule``: the policy's cron. On partitions it is built from the partitioned
  job (``monthly_full_pipeline``: each month's run loads the month that just ended; the same by
  day); an unpartitioned project's run on each tick loads whatever is new.
* ``source_freshness``: polls the project's freshness probe and asks for a run of every partition
  the source published new data in; defined only when the project declares a probe.
* ``alert_on_run_failure``: a run-failure sensor posting core's alert payload to ALERT_WEBHOOK_URL.
"""

import os
from collections.abc import Iterator

import dagster as dg

from core import alerts
from orchestrators.dagster.assets import dbt_models, ingestion_assets
from orchestrators.dagster.partitions import PARTITIONS, partition_of
from orchestrators.dagster.policy import schedule_offset
from orchestrators.dagster.project import NAME, POLICY, PROJECT
from orchestrators.dagster.resources import SourceAPI

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Ingest every resource of the source, then dbt build (models and tests).",
)
dlt_ingestion = dg.define_asset_job(
    "dlt_ingestion",
    selection=dg.AssetSelection.assets(*ingestion_assets),
    description="Load the raw layer from the source (one op per dlt resource).",
)
dbt_transformation = dg.define_asset_job(
    "dbt_transformation",
    selection=dg.AssetSelection.assets(dbt_models),
    description="dbt build over what the raw layer holds: models, data tests, unit tests.",
)
jobs = [full_pipeline, dlt_ingestion, dbt_transformation]


if PARTITIONS is None:
    # nothing to derive from partitions: the policy's cron as it is, each tick a run of
    # whatever the source has that the raw layer does not
    full_pipeline_schedule = dg.ScheduleDefinition(
        name="full_pipeline_schedule",
        job=full_pipeline,
        cron_schedule=POLICY.schedule,
        description="Runs the full pipeline on the policy's cron, loading whatever is new.",
    )
else:
    # Dagster derives the cadence from the partitions; the cron places the tick in each one
    _unit = {"monthly": "month", "daily": "day"}[PROJECT.partitions.scheme]
    full_pipeline_schedule = dg.build_schedule_from_partitioned_job(
        full_pipeline,
        name=f"{PROJECT.partitions.scheme}_full_pipeline",
        **schedule_offset(POLICY, PROJECT.partitions.scheme),
        description=f"Every {_unit}, run the full pipeline for the {_unit} that ended.",
    )


def as_of_config(as_of: str | None) -> dict:
    """Run config giving a run its source clock (the ``api_clock`` resource)."""
    return {"resources": {"api_clock": {"config": {"as_of": as_of}}}} if as_of else {}


def partitions_to_run(first: str, last: str) -> list[str]:
    """The partitions from the one holding ``first`` to the one holding ``last`` (ISO dates or
    timestamps), within the range; the last partition when none of them is."""
    keys = PARTITIONS.get_partition_keys()
    # keys of one scheme sort as their dates do
    return [k for k in keys if partition_of(first) <= k <= partition_of(last)] or keys[-1:]


@dg.sensor(
    job=full_pipeline,
    minimum_interval_seconds=int(POLICY.source_poll_seconds),  # whole seconds (policy.py)
    description="Starts a run for every partition the source published new data in.",
)
def source_freshness(
    context: dg.SensorEvaluationContext, source_api: SourceAPI
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    published = source_api.published_through()
    if not published:
        yield dg.SkipReason("the source has published nothing yet")
        return
    # a source with a clock is asked for what it had published by a day (`--as-of`), so the
    # day is what the sensor remembers and hands the run; without one, the probe's own instant
    seen = published[:10] if PROJECT.clock else published
    previous = context.cursor
    if previous is None:
        context.update_cursor(seen)
        yield dg.SkipReason(f"watching the source from {seen}")
        return
    if seen <= previous:
        yield dg.SkipReason(f"no new data: the source is still as of {seen}")
        return
    run_config = as_of_config(seen if PROJECT.clock else None)
    tags = {"quartet/as_of" if PROJECT.clock else "quartet/published": seen}
    if PARTITIONS is None:  # one run loads whatever is new
        yield dg.RunRequest(run_key=seen, run_config=run_config, tags=tags)
    else:
        for key in partitions_to_run(previous, seen):  # the last one seen may have grown too
            yield dg.RunRequest(
                run_key=f"{key}@{seen}", partition_key=key, run_config=run_config, tags=tags
            )
    context.update_cursor(seen)


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


#: the freshness sensor only where there is a probe to poll; failures are alerted for any project
freshness_sensors = [source_freshness] if PROJECT.freshness_probe else []
sensors = [*freshness_sensors, alert_on_run_failure]
schedules = [full_pipeline_schedule]
