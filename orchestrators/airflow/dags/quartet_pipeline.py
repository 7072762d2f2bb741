"""The full pipeline, monthly: one task per dlt resource, then the dbt project through Cosmos
(one task per model, running the model and its tests). A scheduled or backfill run loads its
data interval's month."""

from airflow.sdk import DAG, CronDataIntervalTimetable

from orchestrators.airflow import PIPELINE_DAG
from orchestrators.airflow.task_groups import (
    DEFAULT_ARGS,
    END,
    PARAMS,
    POLICY,
    START,
    ingestion,
    transformation,
)

with DAG(
    PIPELINE_DAG,
    schedule=CronDataIntervalTimetable(POLICY.schedule, timezone="UTC"),
    start_date=START,
    end_date=END,
    catchup=False,
    max_active_runs=1,  # one writer
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    tags=["quartet"],
    doc_md="The full pipeline: ingest every resource, then build the dbt project.",
):
    ingestion() >> transformation()
