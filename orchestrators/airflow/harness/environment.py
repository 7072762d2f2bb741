"""AIRFLOW_HOME, the settings every Airflow process shares, and the services that run it.

Airflow reads its configuration when it is first imported, so :func:`configure` runs before any
``import airflow`` (the kit calls it before the adapter's modules load). Two homes:

* dev mode (``run``, ``ui``): ``.quartet/airflow/home``, SQLite metadata;
* deployed mode (``up``): ``.quartet/airflow/deployed``, metadata on PostgreSQL.

:func:`services` is the one place that says how ``api-server``, ``scheduler``, ``dag-processor``
and ``triggerer`` are started and what they must agree on (one JWT secret, one metadata DB, the
execution API URL); ``ui`` and ``deploy`` both start them from here.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core import kit, settings, warehouse
from core.kit import Service
from orchestrators.airflow import DAGS_FOLDER, NAME, SOURCE_API_CONN, WAREHOUSE_POOL, levers

USER = "admin"
#: each slot of the LocalExecutor pre-forks a worker process (memory each): keep it small
PARALLELISM = 2
SOURCE_API_CONN_ENV = f"AIRFLOW_CONN_{SOURCE_API_CONN.upper()}"


def airflow_home() -> Path:
    return kit.home(NAME)


def deployed_home() -> Path:
    path = settings.orchestrator_dir(NAME) / "deployed"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bin_dir() -> str:
    return str(Path(sys.executable).parent)


def airflow_env(home: Path, sql_alchemy_conn: str) -> dict[str, str]:
    """What every Airflow process of one home reads: the home, the metadata DB, the executor."""
    path = os.environ.get("PATH", "")
    if bin_dir() not in path.split(os.pathsep):
        # Cosmos finds dbt on PATH; the venv's bin is not on it when Python is called by path
        path = bin_dir() + os.pathsep + path
    return {
        "PATH": path,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # the DAG file reads dbt's manifest (prepared before any service starts); on a busy
        # machine importing dbt and Cosmos alone can take longer than Airflow's default 30 s
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos"),
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        # Cosmos reads the OpenLineage namespace at import and, without it, Airflow prints
        # "section/key [openlineage/namespace] not found in config" on the terminal; Quartet
        # emits no OpenLineage events (the Assets are declared statically: ADR 0007)
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "quartet",
        **levers.dlt_env(),
        **settings.QUIET_ENV,
    }


def configure() -> Path:
    """Point this process (and its children) at the dev-mode AIRFLOW_HOME; returns it."""
    home = airflow_home()
    os.environ.update(airflow_env(home, f"sqlite:///{home / 'airflow.db'}"))
    # what dbt's profiles.yml reads, for dbt in this process and the services it starts
    settings.export_dbt_env(settings.for_pipeline(NAME))
    return home


def secret(home: Path, name: str, make=lambda: secrets.token_urlsafe(24)) -> str:
    """A secret generated once into ``home/name`` (mode 600) and read back afterwards."""
    path = home / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text()


def passwords_file(home: Path) -> Path:
    """The simple auth manager's users and passwords (one ``admin``, generated once)."""
    secret(
        home,
        "simple_auth_manager_passwords.json",
        lambda: json.dumps({USER: secrets.token_urlsafe(12)}),
    )
    return home / "simple_auth_manager_passwords.json"


def password(home: Path) -> str:
    return json.loads(passwords_file(home).read_text())[USER]


def migrate(env: dict[str, str], home: Path) -> None:
    """``airflow db migrate`` once per home and Airflow version (a stamp file remembers it)."""
    from importlib.metadata import version

    stamp = home / "migrated"
    wanted = version("apache-airflow")
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log = kit.log_dir(NAME) / f"migrate-{home.name}.log"
    with open(log, "ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode:
        raise kit.ServiceError(f"airflow db migrate failed (exit {done.returncode}); see {log}")
    stamp.write_text(wanted)


def writer_pool() -> dict:
    """The ``quartet_warehouse`` pool for the configured warehouse: one slot per ingestion unit
    where it admits parallel writers (PostgreSQL), else one (DuckDB takes one writer)."""
    from core.ingestion import load_config

    if warehouse.allows_parallel_writers(settings.for_pipeline(NAME).location):
        slots = len(load_config().resources)
        description = "one slot per ingestion unit: the warehouse admits parallel writers"
    else:
        slots, description = 1, "one writer at a time on the DuckDB warehouse"
    return {"name": WAREHOUSE_POOL, "slots": slots, "description": description}


def migrate_dev() -> Path:
    """The dev-mode metadata DB migrated, with the writer pool sized for the configured
    warehouse (:func:`writer_pool`); returns the home."""
    from core.dbt import prepare_manifest

    home = configure()
    prepare_manifest()  # here, not inside the DAG file's import under Airflow's timeout
    migrate({}, home)
    from airflow.models.pool import Pool

    pool = writer_pool()
    Pool.create_or_update_pool(
        pool["name"], slots=pool["slots"], description=pool["description"], include_deferred=False
    )
    return home


def source_api_connection(url: str, token: str) -> dict[str, str]:
    """The API as an Airflow connection from the environment: its token is the password, so
    Airflow masks it in task logs, and an env connection is never written to the metadata DB."""
    value = json.dumps({"conn_type": "http", "host": url, "password": token})
    os.environ[SOURCE_API_CONN_ENV] = value
    return {SOURCE_API_CONN_ENV: value}


@dataclass(frozen=True)
class Ports:
    api: int


def service_env(home: Path, ports: Ports, sql_alchemy_conn: str) -> dict[str, str]:
    """The settings api-server, scheduler, dag-processor and triggerer must agree on: one JWT
    secret (else "Signature verification failed"), one metadata DB, and the execution API URL
    the task processes call back (the api-server is not on Airflow's default port)."""
    url = f"http://127.0.0.1:{ports.api}"
    return {
        **airflow_env(home, sql_alchemy_conn),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports.api),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secret(home, "api_secret_key"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secret(home, "jwt_secret"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "QUARTET_WAREHOUSE": str(settings.for_pipeline(NAME).warehouse),
    }


#: the services, in start order (the api-server first: the others call its execution API)
SERVICES = ("api-server", "dag-processor", "scheduler", "triggerer")
#: the services that would start Airflow's log server (``serve-logs``), which binds 0.0.0.0 and
#: [::] whatever is configured: every process of a home writes and reads one log folder, so the
#: api-server reads task and trigger logs from the files and no log server is needed
WITHOUT_LOG_SERVER = ("scheduler", "triggerer")


def services(home: Path, env: dict[str, str], ports: Ports, names=SERVICES) -> list[Service]:
    """One :class:`core.kit.Service` per Airflow service; the api-server is ready when its
    health endpoint answers, the others once the api-server reports them healthy."""
    url = f"http://127.0.0.1:{ports.api}"
    logs = home / "logs" / "services"

    def reported_healthy(component: str):
        def check() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                health = json.load(response)
            return health.get(component, {}).get("status") == "healthy"

        return check

    ready = {
        "api-server": f"{url}/api/v2/monitor/health",
        "scheduler": reported_healthy("scheduler"),
        "dag-processor": reported_healthy("dag_processor"),
        "triggerer": reported_healthy("triggerer"),
    }
    return [
        Service(
            name=name,
            argv=[
                sys.executable,
                "-m",
                "airflow",
                name,
                *(["--skip-serve-logs"] if name in WITHOUT_LOG_SERVER else []),
            ],
            log=logs / f"{name}.log",
            ready=ready[name],
            env=env,
            url=url if name == "api-server" else None,
            stop_timeout=30,
        )
        for name in names
    ]
