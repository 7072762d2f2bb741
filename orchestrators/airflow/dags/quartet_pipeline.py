"""The full pipeline: one task per dlt resource, then the dbt project through Cosmos (one task
per model, running the model and its tests). With partitions, a scheduled or backfill run loads
its data interval's partition (a month, a day); without, every run loads whatever is new."""

from airflow.sdk import DAG

from orchestrators.airflow import PIPELINE_DAG
from orchestrators.airflow.task_groups import (
    DEFAULT_ARGS,
    END,
    PARAMS,
    START,
    ingestion,
    pipeline_schedule,
    transformation,
)

with DAG(
    PIPELINE_DAG,
    schedule=pipeline_schedule(),
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
