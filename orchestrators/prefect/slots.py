"""The warehouse's writers in Prefect's terms: a global concurrency limit, one slot per writer.

``quartet-warehouse-prefect`` has one slot on DuckDB (one writer per file) and one per ingestion
unit on PostgreSQL, where the dbt build occupies them all. ``provision`` sizes it
(:func:`writer_slots`); every writer holds its slots through :func:`writer_slot`.
"""

from __future__ import annotations

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency

from core import kit, settings, warehouse
from core.failures import WarehouseBusyError
from core.ingestion import load_config
from orchestrators.prefect import NAME, WAREHOUSE_LIMIT
from orchestrators.prefect.policy import lease_seconds


def writer_slots() -> int:
    """The size of the warehouse's writer limit: one slot per ingestion unit where the warehouse
    admits parallel writers (PostgreSQL), else one (DuckDB: one writer per file)."""
    location = settings.for_pipeline(NAME).location
    return len(load_config().resources) if warehouse.allows_parallel_writers(location) else 1


def writer_slot(occupy: int = 1):
    """``occupy`` slots of the warehouse's writer limit; waits up to QUARTET_LOCK_TIMEOUT, then
    fails clearly.

    Its lease lasts ``heartbeat_seconds`` (at least Prefect's minimum) and is renewed while the
    holder lives: a holder killed mid-run loses it that long after, freed by the server.
    """
    return concurrency(
        WAREHOUSE_LIMIT,
        occupy=occupy,
        timeout_seconds=warehouse.lock_timeout(),
        lease_duration=lease_seconds(kit.policy()),
        strict=True,
    )


def release_stale_slots(say=print) -> int:
    """Free the warehouse slots no live writer holds; returns how many (0 when none were stale).

    A run killed with SIGKILL leaves its slot occupied. On a long-lived server the slot's lease
    expires (it is renewed only while its holder lives) and Prefect's repossessor frees it; but a
    lease kept in memory is gone when its server stops (the ephemeral server of a dev run, a
    restarted ``prefect server start``), and then nothing would ever free the slot. Every holder
    of the slot also holds the warehouse's writer lock, which the kernel releases when its process
    dies: when that lock is free, every occupied slot belongs to a dead run.

    A warehouse that admits parallel writers (PostgreSQL) has no such lock (``writer_lock`` is a
    no-op there), so nothing proves a holder dead: its slots are left to their leases.
    """
    location = settings.for_pipeline(NAME).location
    if warehouse.allows_parallel_writers(location):
        return 0
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(WAREHOUSE_LIMIT)
        if not limit.active_slots:
            return 0
        try:
            with warehouse.writer_lock(location, timeout=0, purpose=f"{NAME} slot check"):
                client.update_global_concurrency_limit(
                    WAREHOUSE_LIMIT, GlobalConcurrencyLimitUpdate(active_slots=0)
                )
        except WarehouseBusyError:  # a live writer: its slot is not stale
            return 0
    say(
        f"[{NAME}] released {limit.active_slots} warehouse slot(s) of {WAREHOUSE_LIMIT} left "
        "occupied by a run that died (killed before it could give them back)"
    )
    return limit.active_slots
