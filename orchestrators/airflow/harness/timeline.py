"""The last dev-mode run's units as Airflow's metadata DB recorded them (``lab/timeline.py``).

``python -m orchestrators.airflow.harness.timeline --home H`` points Airflow at the dev-mode home of the
QUARTET_HOME ``H`` (``.quartet/airflow/home/airflow.db``, SQLite that ``dag.test()`` wrote and
that outlives the run) and prints JSON: the newest ``quartet_pipeline`` DAG run's start and end
and one unit per task instance (its ``start_date`` and ``end_date``).
"""

from __future__ import annotations

import json
import sys

from lab.timeline import reader_home


def main(argv: list[str] | None = None) -> int:
    reader_home(argv, prog="python -m orchestrators.airflow.harness.timeline")

    from orchestrators.airflow import PIPELINE_DAG
    from orchestrators.airflow.harness import environment

    environment.configure()  # before Airflow reads its configuration

    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session

    from orchestrators.airflow.harness.run import unit_of

    with create_session() as session:
        dag_run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == PIPELINE_DAG)
            .order_by(DagRun.start_date.desc())
            .first()
        )
        if dag_run is None:
            raise SystemExit(f"no {PIPELINE_DAG} run in {environment.airflow_home()}")
        units = []
        for ti in session.query(TaskInstance).filter(
            TaskInstance.dag_id == PIPELINE_DAG, TaskInstance.run_id == dag_run.run_id
        ):
            if ti.start_date is None or ti.end_date is None:
                continue  # never ran (upstream failed)
            kind, unit = unit_of(ti.task_id)
            units.append(
                {
                    "unit": unit,
                    "kind": kind,
                    "start": ti.start_date.timestamp(),
                    "end": ti.end_date.timestamp(),
                    "state": ti.state,
                }
            )
        print(
            json.dumps(
                {
                    "source": "Airflow's task instances (dev-mode metadata DB, SQLite)",
                    "id": dag_run.run_id,
                    "status": dag_run.state,
                    "start": dag_run.start_date.timestamp(),
                    "end": dag_run.end_date.timestamp(),
                    "units": units,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
