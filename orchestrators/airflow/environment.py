"""AIRFLOW_HOME under .quartet/airflow/home and the settings every Airflow process shares.

Airflow reads its configuration when it is first imported, so :func:`configure` runs before
any ``import airflow``; the services started by ``ui`` inherit the same environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core import settings
from orchestrators.airflow import DAGS_FOLDER, NAME, SOURCE_API_CONN, WAREHOUSE_POOL


def airflow_home() -> Path:
    return settings.state_dir() / NAME / "home"


def configure() -> Path:
    """Point this process (and its children) at the gitignored AIRFLOW_HOME; returns it."""
    home = airflow_home()
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        # Cosmos finds dbt on PATH (TRAPS.md); the venv's bin is not on it when called by path
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            **settings.QUIET_ENV,
        }
    )
    settings.for_pipeline(NAME)  # exports QUARTET_WAREHOUSE for dbt's profiles.yml
    return home


def migrate() -> None:
    """``airflow db migrate`` once per home (and per Airflow version), then the writer pool."""
    from importlib.metadata import version

    home = configure()
    stamp = home / "migrated"
    wanted = version("apache-airflow")
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        stamp.write_text(wanted)
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        WAREHOUSE_POOL,
        slots=1,
        description="one writer at a time on warehouse/airflow.duckdb",
        include_deferred=False,
    )


def source_api_connection(url: str, token: str) -> None:
    """The API as an Airflow connection (token as its password: masked in logs and the UI)."""
    os.environ[f"AIRFLOW_CONN_{SOURCE_API_CONN.upper()}"] = json.dumps(
        {"conn_type": "http", "host": url, "password": token}
    )
