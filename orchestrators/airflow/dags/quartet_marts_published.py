"""Data-aware scheduling: runs once every leaf of the dbt graph (each model no other model
reads, in whatever schema: read from the manifest) has been rebuilt since its last run."""

from airflow.sdk import DAG, AssetAll, task

from orchestrators.airflow import MARTS_DAG, WAREHOUSE_POOL, assets, tasks
from orchestrators.airflow.task_groups import START

with DAG(
    MARTS_DAG,
    schedule=AssetAll(*assets.LEAVES),
    start_date=START,
    catchup=False,
    tags=["quartet"],
    doc_md="Runs when every leaf model has been rebuilt: data-aware scheduling on their Assets.",
):

    @task(pool=WAREHOUSE_POOL, inlets=assets.LEAVES)
    def report_marts() -> dict[str, int]:
        return tasks.mart_counts([asset.name for asset in assets.LEAVES])

    report_marts()
