"""Ingestion alone: one TaskFlow task per dlt resource, run by hand."""

from airflow.sdk import DAG

from orchestrators.airflow import INGEST_DAG
from orchestrators.airflow.task_groups import DEFAULT_ARGS, END, PARAMS, START, ingestion

with DAG(
    INGEST_DAG,
    schedule=None,
    start_date=START,
    end_date=END,
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    tags=["quartet"],
    doc_md="Ingestion only: one task per dlt resource.",
):
    ingestion()
