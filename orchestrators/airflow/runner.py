"""Headless runs: ``airflow db migrate`` into the gitignored AIRFLOW_HOME, then ``dag.test()``.

``dag.test()`` runs the DAG in this process with Airflow's own dependency handling, pools,
retries and callbacks, and records the run in the metadata DB (``ui`` shows it afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime

from core import settings
from core.ingestion import ConfigError, load_config, parse_partition, window
from core.source_api import SourceAPIConfig, running_source_api
from orchestrators.airflow import DAGS_FOLDER, PIPELINE_DAG, environment


def load_dag(dag_id: str = PIPELINE_DAG):
    """A DAG from the DAG folder, as the dag-processor sees it (import errors raise)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise RuntimeError(f"no DAG {dag_id!r} in {DAGS_FOLDER} (found {sorted(bag.dags)})")
    return bag.dags[dag_id]  # (not bag.get_dag: that asks the metadata DB, which may not exist yet)


def run_once(dag, *, as_of: str | None = None, partition: str | None = None, logical_date=None):
    """One in-process ``dag.test()`` run; returns the finished DagRun."""
    conf = {"as_of": as_of, "partition": partition}
    if partition and logical_date is None:
        year, month = parse_partition(partition)
        logical_date = datetime(year, month, 1, tzinfo=UTC)
    return dag.test(logical_date=logical_date, run_conf=conf)


def failures(dag_run) -> list[str]:
    """``task_id: state`` of every task instance that did not succeed."""
    return [
        f"{ti.task_id}: {ti.state}"
        for ti in dag_run.get_task_instances()
        if ti.state not in ("success", "skipped")
    ]


def run(*, as_of: str | None = None, partitions: Sequence[str | None] = (None,)) -> bool:
    """The full pipeline once per partition (or once over everything); True when all succeed."""
    config = load_config()
    try:
        for partition in partitions:
            window(config, as_of=as_of, partition=partition)  # fail fast on a bad flag
    except ConfigError as exc:
        print(f"quartet airflow run: {exc}", flush=True)
        return False
    environment.migrate()
    api = SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )
    with running_source_api(api) as (url, token):
        environment.source_api_connection(url, token)
        dag = load_dag()
        for partition in partitions:
            dag_run = run_once(dag, as_of=as_of, partition=partition)
            if dag_run.state != "success":
                print(
                    f"quartet airflow run: {dag_run.run_id} {dag_run.state}: "
                    + ", ".join(failures(dag_run)),
                    flush=True,
                )
                return False
    print(f"[airflow] done -> {settings.for_pipeline('airflow').warehouse}", flush=True)
    os.environ.pop("AIRFLOW_CONN_QUARTET_SOURCE_API", None)
    return True
