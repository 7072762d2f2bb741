"""The Dagster code location: ``dagster dev -m orchestrators.dagster.definitions``."""

from __future__ import annotations

import dagster as dg

from orchestrators.dagster.assets import dbt_models, ingestion_assets
from orchestrators.dagster.automation import jobs, schedules, sensors
from orchestrators.dagster.resources import resources

defs = dg.Definitions(
    # one process per run: the warehouse pool lets one op write at a time anyway, and the run
    # worker is then the one process doing the work (what run monitoring watches and a retry
    # replaces) instead of a subprocess per step
    assets=[*ingestion_assets, dbt_models],
    jobs=jobs,
    schedules=schedules,
    sensors=sensors,
    resources=resources(),
    executor=dg.in_process_executor,
)
