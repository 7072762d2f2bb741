"""The Dagster code location: ``dagster dev -m orchestrators.dagster.definitions``."""

from __future__ import annotations

import dagster as dg

from orchestrators.dagster.assets import dbt_models, ingestion_assets
from orchestrators.dagster.automation import jobs, schedules, sensors
from orchestrators.dagster.resources import resources

defs = dg.Definitions(
    assets=[*ingestion_assets, dbt_models],
    jobs=jobs,
    schedules=schedules,
    sensors=sensors,
    resources=resources(),
)
