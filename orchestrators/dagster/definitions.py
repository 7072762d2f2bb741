"""The Dagster code location: ``dagster dev -m orchestrators.dagster.definitions``.

Loading it refuses an [orchestration] policy Dagster cannot follow (``policy.py``).
"""

from __future__ import annotations

import dagster as dg

from orchestrators.dagster.assets import dbt_models, ingestion_assets
from orchestrators.dagster.automation import jobs, schedules, sensors
from orchestrators.dagster.project import PARALLEL_WRITERS, WAREHOUSE_POOL_LIMIT
from orchestrators.dagster.resources import resources

if PARALLEL_WRITERS:
    # PostgreSQL: a process per step, as many at once as the warehouse pool admits, so that
    # every ingestion unit runs at the same time (the pool, not the executor, is the limit)
    executor = dg.multiprocess_executor.configured({"max_concurrent": WAREHOUSE_POOL_LIMIT})
else:
    # DuckDB: one process per run: the warehouse pool lets one op write at a time anyway, and
    # the run worker is then the one process doing the work (what run monitoring watches and a
    # retry replaces) instead of a subprocess per step
    executor = dg.in_process_executor

defs = dg.Definitions(
    assets=[*ingestion_assets, dbt_models],
    jobs=jobs,
    schedules=schedules,
    sensors=sensors,
    resources=resources(),
    executor=executor,
)


def job(name: str) -> dg.JobDefinition:
    """A job of this code location by name: what ``build_reconstructable_job`` rebuilds in each
    step process of a multiprocess run."""
    return defs.resolve_job_def(name)
