"""The dbt project alone, through Cosmos: one task per model (the model and its tests)."""

from airflow.sdk import DAG

from orchestrators.airflow import TRANSFORM_DAG
from orchestrators.airflow.task_groups import DEFAULT_ARGS, END, PARAMS, START, transformation

with DAG(
    TRANSFORM_DAG,
    schedule=None,
    start_date=START,
    end_date=END,
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    tags=["quartet"],
    doc_md="Transformation only: dbt build via Cosmos.",
):
    transformation()
