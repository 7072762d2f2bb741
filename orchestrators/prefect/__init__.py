"""Quartet on Prefect 3: the shared dlt + dbt pipeline as flows, tasks and deployments.

File plan: ``flows`` (tasks, subflows, the failure hook, the warehouse slot), ``deployments``
(schedules, the as-of trigger, the source watcher; the Secret block and the concurrency limit),
``run`` (dev mode), ``ui``, ``deploy`` (server on PostgreSQL, a process work pool and its worker),
``lineage`` (the graph the flows declare).

This module imports no Prefect: :func:`configure` must set ``PREFECT_HOME`` before Prefect reads
its settings.
"""

from __future__ import annotations

import os

from core import kit

#: the pipeline name: warehouse/prefect.duckdb (or QUARTET_WAREHOUSE_URL), dlt pipeline
#: quartet_prefect
NAME = "prefect"
#: Secret block holding the source API's bearer token
TOKEN_BLOCK = "quartet-source-api-token"
#: global concurrency limit every writer of the warehouse occupies: 1 slot on DuckDB, one per
#: ingestion unit on PostgreSQL (flows.writer_slots)
WAREHOUSE_LIMIT = "quartet-warehouse-prefect"
#: event the source watcher emits when the API has published new data
NEW_DATA_EVENT = "quartet.source.published"
SOURCE_RESOURCE_ID = "quartet.source-api"
#: Prefect variable holding the source watermark the watcher saw last
WATERMARK_VARIABLE = "quartet_source_watermark"
DEFAULT_UI_PORT = 4200


def configure(api_url: str | None = None) -> None:
    """Point Prefect at Quartet's home (and at a server when ``api_url`` is given).

    Call before importing Prefect. Without ``api_url`` (and no PREFECT_API_URL in the
    environment), flows run against Prefect's ephemeral API: a server process on a SQLite
    database in PREFECT_HOME, started on first use.
    """
    os.environ.setdefault("PREFECT_HOME", str(kit.home(NAME)))
    # The ephemeral server's first start in a fresh environment creates its database and has no
    # bytecode yet: it can take minutes on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
