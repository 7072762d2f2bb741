"""Event trigger: a sensor polls the project's freshness probe and runs the pipeline once the
source has published past what the last triggered run was started for. Defined only for a
project that declares a probe (``[freshness] probe``): without one there is nothing to poll."""

from datetime import timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, PokeReturnValue, task

from core import project
from orchestrators.airflow import PIPELINE_DAG, WATCH_DAG, tasks
from orchestrators.airflow.task_groups import POLICY, START

# a run pokes every source_poll_seconds and ends (soft fail) before the next run starts
WATCH_EVERY = timedelta(seconds=POLICY.source_poll_seconds * 10)

if project.current().freshness_probe:
    with DAG(
        WATCH_DAG,
        schedule=WATCH_EVERY,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["quartet"],
        doc_md="Event trigger: runs the pipeline when the source has published new data.",
    ):

        @task.sensor(
            poke_interval=POLICY.source_poll_seconds,
            timeout=WATCH_EVERY.total_seconds() - POLICY.source_poll_seconds,
            mode="reschedule",  # between pokes the sensor holds no executor slot
            soft_fail=True,
        )
        def new_source_data(ti) -> PokeReturnValue:
            """Done when the source's newest publication is past the one the last triggered run
            was started for: this sensor's result in an earlier watch run (a watch that found
            nothing new soft-fails and records none). Before any, whatever is published is new."""
            published = tasks.source_published()
            # one value, the newest (map_indexes: this unmapped task's, not every earlier run's)
            acted_on = ti.xcom_pull(
                task_ids=ti.task_id, include_prior_dates=True, map_indexes=ti.map_index
            )
            new = published is not None and (acted_on is None or published > acted_on)
            print(f"source published through {published}, last acted on {acted_on}: new={new}")
            return PokeReturnValue(is_done=new, xcom_value=published)

        run_pipeline = TriggerDagRunOperator(
            task_id="run_pipeline",
            trigger_dag_id=PIPELINE_DAG,
            # a source with a clock is asked for what it had published then (its day); the
            # conf is rendered when the task runs, after the sensor's result exists
            conf=(
                {"as_of": "{{ ti.xcom_pull(task_ids='new_source_data')[:10] }}"}
                if project.current().clock
                else None
            ),
            logical_date=None,
        )
        new_source_data() >> run_pipeline
