"""The months of the configured range as Dagster partitions, and the core windows a run covers."""

from __future__ import annotations

import dagster as dg

from core.ingestion import RunWindow, next_month, window
from orchestrators.dagster.project import CONFIG

#: the months of the configured range, keyed YYYY-MM like the rest of Quartet
MONTHLY = dg.MonthlyPartitionsDefinition(
    start_date=CONFIG.partitions_from,
    end_date=next_month(CONFIG.partitions_to),
    fmt="%Y-%m",
)


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
