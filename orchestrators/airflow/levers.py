"""The Airflow adapter's speed levers: where it departs from Airflow's stock setup to go faster.

``QUARTET_STOCK=1`` (:func:`core.settings.stock`) turns every one of them off, leaving stock
Airflow, dlt and Cosmos, which run the same pipeline to the same warehouse. Gains are as measured
in docs/adr/0007-airflow-adapter.md and 0014-airflow-deployed-mode.md (commands there).

Not levers, though they are settings Airflow does not ship with, because they are there for
correctness: Cosmos' ``LoadMode.DBT_MANIFEST`` and ``InvocationMode.DBT_RUNNER`` (Cosmos'
documented options), the Cosmos callback closing dbt-duckdb's handle (one writer), the
executor's parallelism (memory), the import and heartbeat timeouts (busy tasks are not dead),
the orphaned-task interval (recovery) and the execution-API token's lifetime.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from core import settings

#: what every task process imports (the DAG files' imports, dbt and its adapters, dlt, core)
TASK_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.executors.local_executor",
    "airflow.providers.standard.operators.trigger_dagrun",
    "cosmos",
    "cosmos.operators.local",
    "dbt.cli.main",
    "dbt.adapters.duckdb",
    "dbt.adapters.postgres",
    "core.pipeline",
    "orchestrators.airflow.tasks",
)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Around ``dag.test()``: the objects that exist before the run are frozen (``gc.freeze``).

    Why: Cosmos ends each dbt invocation with a full ``gc.collect()``; in dev mode's one
    process that walks every object of Airflow, dbt, Cosmos and the parsed DAG, once per dbt
    task. Frozen, the collections walk only what the run creates; afterwards all is
    collectable again. Gain: one collection went from about half a second to nothing, and a
    profile of dev-mode runs had a third of its samples in it (``py-spy record`` of the test
    process, ADR 0007); the wall-time gain of a run is not cleanly measured yet.
    """
    if settings.stock():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def dlt_env() -> dict[str, str]:
    """Every Airflow process: dlt's Airflow secrets provider off.

    Why: inside Airflow, dlt looks every setting it resolves up as an Airflow Variable too,
    one execution-API round trip per field; Quartet keeps no dlt settings in Variables (the
    token comes from the ``quartet_source_api`` connection). Gain: deployed January run
    284.8 s -> 224.6 s, its five ingestion tasks 96.4 s -> 27.8 s (``quartet bench deployed
    --only airflow --repeat 1 --as-of 2013-01-31``, ADR 0014). A project that keeps dlt
    secrets in a Variable turns it back on.
    """
    return {} if settings.stock() else {"PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false"}


def scheduler_env() -> dict[str, str]:
    """The scheduler (deployed mode): its LocalExecutor workers forked from a forkserver that
    imported :data:`TASK_PRELOAD` once.

    Why: each task process, forked from a worker, then finds dbt, Cosmos, dlt and core in
    ``sys.modules`` instead of importing them. Only the scheduler reads ``[scheduler]``. Gain:
    a deployed January run 115.6/121.9 s -> 67.7/82.9 s, a dbt task's median 4.29 s -> 2.26 s,
    at about 240 MB more shared memory (``quartet bench deployed --only airflow --repeat 1
    --as-of 2013-01-31``, ADR 0014). A change to core/ reaches tasks after the scheduler
    restarts.
    """
    if settings.stock():
        return {}
    return {
        "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(TASK_PRELOAD),
    }
