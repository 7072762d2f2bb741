"""Event trigger: a sensor on the source API runs the pipeline once the API has published data
the warehouse has not loaded yet (its watermark past the newest ``updated_at`` loaded)."""

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, PokeReturnValue, task

from orchestrators.airflow import PIPELINE_DAG, WATCH_DAG, tasks
from orchestrators.airflow.task_groups import POLICY, START

# a run pokes every source_poll_seconds and ends (soft fail) before the next run starts
WATCH_EVERY = timedelta(seconds=POLICY.source_poll_seconds * 10)

with DAG(
    WATCH_DAG,
    schedule=WATCH_EVERY,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["quartet"],
    doc_md="Event trigger: runs the pipeline when the source API has published new data.",
):

    @task.sensor(
        poke_interval=POLICY.source_poll_seconds,
        timeout=WATCH_EVERY.total_seconds() - POLICY.source_poll_seconds,
        mode="reschedule",  # between pokes the sensor holds no executor slot
        soft_fail=True,
    )
    def new_source_data() -> PokeReturnValue:
        """Done when the API's watermark is past the newest record the warehouse has loaded."""
        status = tasks.source_status()
        loaded = tasks.loaded_watermark()
        new = status["watermark"] is not None and (loaded is None or status["watermark"] > loaded)
        print(f"source watermark {status['watermark']}, loaded {loaded}: new data={new}")
        return PokeReturnValue(is_done=new, xcom_value=status["as_of"][:10])

    TriggerDagRunOperator(
        task_id="run_pipeline",
        trigger_dag_id=PIPELINE_DAG,
        conf={"as_of": new_source_data()},
        logical_date=None,
    )
