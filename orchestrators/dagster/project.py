"""Where the Dagster project lives and what it shares with every asset: paths, partitions, pool.

Everything derives from ``core.settings`` (QUARTET_HOME) when this module is imported, so import
it after QUARTET_HOME is set. Generated state lives under ``.quartet/dagster/`` (gitignored):
``home/`` is the dev-mode instance (``quartet run|ui dagster``), ``deployed/`` the deployed one.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from core import kit, settings
from core.ingestion import RunWindow, load_config, window
from core.warehouse import allows_parallel_writers

NAME = "dagster"
PIPELINE = settings.for_pipeline(NAME)  # also exports QUARTET_WAREHOUSE for dbt's profiles.yml
CONFIG = load_config()
POLICY = kit.policy()

#: the one concurrency pool every warehouse writer (dlt and dbt ops) claims
WAREHOUSE_POOL = "quartet_warehouse"
#: whether the configured warehouse admits several writers at once (PostgreSQL: yes, DuckDB: no)
PARALLEL_WRITERS = allows_parallel_writers(PIPELINE.location)
#: the pool's limit: every ingestion unit at once where the engine allows it (the dbt op depends
#: on all of them, so it never competes with them), else one writer at a time (a DuckDB file)
WAREHOUSE_POOL_LIMIT = len(CONFIG.resources) if PARALLEL_WRITERS else 1

#: what dbt itself reported about a node, added to its event's metadata by the dbt asset: when
#: dbt started and finished it (ISO 8601, UTC; ``timeline.py`` draws these), and for a model the
#: results of its unit tests (dagster-dbt makes no event of a unit test)
DBT_STARTED_AT, DBT_FINISHED_AT = "dbt/started_at", "dbt/finished_at"
UNIT_TESTS_PASSED, UNIT_TESTS_FAILED = "dbt/unit_tests_passed", "dbt/unit_tests_failed"


def _next_month(partition: str) -> str:
    year, month = (int(x) for x in partition.split("-"))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}"


#: the months of the configured range, keyed YYYY-MM like the rest of Quartet
MONTHLY = dg.MonthlyPartitionsDefinition(
    start_date=CONFIG.partitions_from,
    end_date=_next_month(CONFIG.partitions_to),
    fmt="%Y-%m",
)


def dagster_home() -> Path:
    """The dev-mode DAGSTER_HOME (SQLite storage) with its instance config for this warehouse.

    The config is rewritten when the warehouse's engine changed since the last run: the pool's
    limit follows it (Dagster moves a pool that uses the default limit to the new one).
    """
    home = kit.home(NAME)
    config = home / "dagster.yaml"
    why = "every ingestion unit at once" if PARALLEL_WRITERS else "one writer at a time on DuckDB"
    text = (
        "# Written by orchestrators/dagster/project.py (generated state, gitignored)\n"
        "telemetry:\n  enabled: false\n"
        "nux:\n  enabled: false  # no 'Join the Dagster community' dialog over the UI\n"
        "concurrency:\n"
        "  pools:\n"
        f"    default_limit: {WAREHOUSE_POOL_LIMIT}  # {why}\n"
    )
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return home


def use_dagster_home() -> Path:
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_windows(
    context: dg.AssetExecutionContext, resources: tuple[str, ...], as_of: str | None
) -> list[RunWindow]:
    """The core windows a run covers: one per month of its partition(s), or the whole range.

    A run of one partition carries ``dagster/partition``, a single-run backfill the range tags;
    both answer ``partition_key_range``. An unpartitioned run, or one over every month, is one
    full load like bare's.
    """
    if not (context.has_partition_key or context.has_partition_key_range):
        return [window(CONFIG, as_of=as_of, resources=resources)]
    months = MONTHLY.get_partition_keys_in_range(context.partition_key_range)
    if months == CONFIG.partitions():
        return [window(CONFIG, as_of=as_of, resources=resources)]
    return [window(CONFIG, as_of=as_of, partition=m, resources=resources) for m in months]
