"""Data-aware scheduling: runs once every mart (every model dbt puts in the marts schema,
read from the manifest) has been rebuilt since its last run."""

from airflow.sdk import DAG, AssetAll, task

from orchestrators.airflow import MARTS_DAG, WAREHOUSE_POOL, assets, tasks
from orchestrators.airflow.task_groups import START

with DAG(
    MARTS_DAG,
    schedule=AssetAll(*assets.MARTS),
    start_date=START,
    catchup=False,
    tags=["quartet"],
    doc_md="Runs when every mart has been rebuilt: data-aware scheduling on the mart Assets.",
):

    @task(pool=WAREHOUSE_POOL, inlets=assets.MARTS)
    def report_marts() -> dict[str, int]:
        return tasks.mart_counts()

    report_marts()
