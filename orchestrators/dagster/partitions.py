"""The project's partitions as Dagster's, and the core windows a run covers.

``[time] partitions`` in the project file chooses: ``monthly`` -> ``MonthlyPartitionsDefinition``,
``daily`` -> ``DailyPartitionsDefinition``, each over the declared range and keyed like the rest of
Quartet (``YYYY-MM``, ``YYYY-MM-DD``); ``none`` -> no partitions definition at all: the assets are
unpartitioned and every run loads whatever is new.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from core.ingestion import RunWindow, window
from core.project import Partitions
from orchestrators.dagster.project import CONFIG, PROJECT


def partitions_def(partitions: Partitions) -> dg.TimeWindowPartitionsDefinition | None:
    """Dagster's partitions for the project's scheme (None: the project has none)."""
    if not partitions.enabled:
        return None
    # the end is exclusive in Dagster: the partition after the last one declared
    end = partitions.next(partitions.last)
    if partitions.scheme == "monthly":
        return dg.MonthlyPartitionsDefinition(
            start_date=partitions.first, end_date=end, fmt="%Y-%m"
        )
    return dg.DailyPartitionsDefinition(start_date=partitions.first, end_date=end, fmt="%Y-%m-%d")


#: the project's partitions (None: unpartitioned assets, runs without partition keys)
PARTITIONS = partitions_def(PROJECT.partitions)
#: a backfill of many partitions is one run (core loads a range window by window); an
#: unpartitioned asset has nothing to backfill
BACKFILL_POLICY = dg.BackfillPolicy.single_run() if PARTITIONS else None
#: how a run over the whole range is named (the run's header, the asset's metadata)
WHOLE_RANGE = {"monthly": "all months", "daily": "all days"}.get(
    PROJECT.partitions.scheme, "everything new"
)


def partition_of(day: str) -> str:
    """The key of the partition holding ``day`` (an ISO date or timestamp)."""
    return PROJECT.partitions.key(dt.date.fromisoformat(day[:10]))


def run_windows(
    context: dg.AssetExecutionContext, resources: tuple[str, ...], as_of: str | None
) -> list[RunWindow]:
    """The core windows a run covers: one per partition it names, or one over everything.

    A run of one partition carries ``dagster/partition``, a single-run backfill the range tags;
    both answer ``partition_key_range``. An unpartitioned run, or one over every partition, is
    one full load like bare's.
    """
    if not (context.has_partition_key or context.has_partition_key_range):
        return [window(CONFIG, as_of=as_of, resources=resources)]
    keys = PARTITIONS.get_partition_keys_in_range(context.partition_key_range)
    if keys == CONFIG.partitions():
        return [window(CONFIG, as_of=as_of, resources=resources)]
    return [window(CONFIG, as_of=as_of, partition=key, resources=resources) for key in keys]
