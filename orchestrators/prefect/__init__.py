"""Quartet on Prefect 3: the shared dlt + dbt pipeline as flows, tasks and deployments.

File plan: what a Prefect user writes first: ``flows`` (flows and the ingestion task),
``deployments`` (schedules, the as-of trigger, the source watcher; the Secret block and the
concurrency limit), with ``policy`` (retries, [orchestration]), ``slots`` (the warehouse's
concurrency limit) and ``reporting`` (the failure hook, the progress lines) beside them; then the
harness: ``run`` (dev mode), ``ui``, ``deploy`` (server on PostgreSQL, a process work pool and its
worker), ``lineage``, ``timeline``; ``levers``: the speed levers, all off with QUARTET_STOCK=1.

This module imports no Prefect: :func:`configure` must set ``PREFECT_HOME`` before Prefect reads
its settings.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from core import kit

#: the pipeline name: warehouse/prefect.duckdb (or QUARTET_WAREHOUSE_URL), dlt pipeline
#: quartet_prefect
NAME = "prefect"
#: Secret block holding the demo source API's bearer token (a project whose source is that API)
TOKEN_BLOCK = "quartet-source-api-token"
#: global concurrency limit every writer of the warehouse occupies: 1 slot on DuckDB, one per
#: ingestion unit on PostgreSQL (slots.writer_slots)
WAREHOUSE_LIMIT = "quartet-warehouse-prefect"
#: event the source watcher emits when the source has published more (the project's freshness
#: probe answered a newer publication)
NEW_DATA_EVENT = "quartet.source.published"
SOURCE_RESOURCE_ID = "quartet.source-api"
#: Prefect variable holding the source's newest publication the watcher saw last
WATERMARK_VARIABLE = "quartet_source_watermark"
DEFAULT_UI_PORT = 4200
#: the file, in a PREFECT_HOME, holding the basic-auth credential of the server that home belongs
#: to (``user:password``, as Prefect's UI asks for it); mode 600
AUTH_FILE = "api_auth_string"
AUTH_USER = "quartet"
#: the clients' setting (CLI, worker, flow runs, this process) and the server's
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"


def auth_file(home: Path) -> Path:
    return Path(home) / AUTH_FILE


def api_auth_string(home: Path) -> str:
    """The credential of the Prefect server whose PREFECT_HOME is ``home``: generated once into
    ``home/api_auth_string`` (created with mode 600: never readable by others, not even briefly)
    and read back afterwards.

    Without it Prefect's server answers every caller, the Secret block's value included
    (``include_secrets=true`` on the block documents' endpoints). It reaches processes only
    through their environment, never a command line.
    """
    path = auth_file(home)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole under another name, then linked into place: a process starting at the
        # same time either links first or reads the winner's, never a half-written file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{AUTH_FILE}.")  # mode 600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(f"{AUTH_USER}:{secrets.token_urlsafe(24)}\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def configure(api_url: str | None = None) -> None:
    """Point Prefect at Quartet's home (and at a server when ``api_url`` is given).

    Call before importing Prefect. Without ``api_url`` (and no PREFECT_API_URL in the
    environment), flows run against Prefect's ephemeral API: a server process on a SQLite
    database in PREFECT_HOME, started on first use.
    """
    os.environ.setdefault("PREFECT_HOME", str(kit.home(NAME)))
    # The ephemeral server's first start in a fresh environment creates its database and has no
    # bytecode yet: far slower than Prefect's default timeout allows on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # this process's clients sign in to the server of this PREFECT_HOME (the ephemeral one of a
    # dev run, `quartet ui`'s); a credential given in the environment (a server of your own) wins
    os.environ.setdefault(CLIENT_AUTH_ENV, api_auth_string(Path(os.environ["PREFECT_HOME"])))
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
