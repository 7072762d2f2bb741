"""The one place for paths and environment-driven settings.

Every path Quartet writes to is derived here from two roots:

* ``QUARTET_HOME`` (default: the repository root) - where generated state lives
  (``warehouse/``, ``.quartet/``), all of it gitignored;
* the repository itself (``core/ingestion.toml``) and the project file (core.project: the dbt
  project, ``transform/`` for nycflights).

The warehouse of a run is ``$QUARTET_HOME/warehouse/<name>.duckdb``. :func:`for_pipeline`
hands that absolute path to dlt, and :meth:`PipelineSettings.dbt_env` gives it to dbt's
``profiles.yml`` as ``QUARTET_WAREHOUSE`` (set where dbt runs), so dlt and dbt can never point at
two different files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the run's tuning (performance, retries, faults, scale, orchestration policy), for any project
INGESTION_CONFIG = Path(__file__).resolve().parent / "ingestion.toml"

#: environment variable read by transform/profiles.yml (and set by :func:`export_dbt_env`)
WAREHOUSE_ENV = "QUARTET_WAREHOUSE"
SOURCE_API_URL_ENV = "SOURCE_API_URL"
SOURCE_API_TOKEN_ENV = "SOURCE_API_TOKEN"
ALERT_WEBHOOK_ENV = "ALERT_WEBHOOK_URL"
#: a PostgreSQL warehouse (postgresql://user:pass@host:port/db) instead of warehouse/<name>.duckdb
WAREHOUSE_URL_ENV = "QUARTET_WAREHOUSE_URL"
#: DuckDB's memory limit for dbt's profile ([performance] duckdb_memory_limit), set by export_dbt_env
DUCKDB_MEMORY_ENV = "QUARTET_DUCKDB_MEMORY_LIMIT"
#: dbt target chosen by transform/profiles.yml (duckdb or postgres), set by :func:`export_dbt_env`
DBT_TARGET_ENV = "QUARTET_DBT_TARGET"

#: QUARTET_STOCK=1 turns every adapter's speed levers off (each adapter's levers module): the
#: orchestrator's stock idiom, as its docs write it, to measure beside the tuned one
STOCK_ENV = "QUARTET_STOCK"

#: token of the API that Quartet starts itself when SOURCE_API_URL is unset (a local dev secret)
DEV_API_TOKEN = "quartet-dev-token"

ORCHESTRATORS = ("dagster", "airflow", "prefect", "temporal")
PIPELINE_NAMES = ("bare", *ORCHESTRATORS)


def __getattr__(name: str):
    """What the chosen project declares (core.project), read where it is used:

    * ``TRANSFORM_DIR``: its dbt project folder (``transform/`` for nycflights);
    * ``PROFILES_DIR``: the folder of its dbt ``profiles.yml``;
    * ``RAW_SCHEMA``: the dlt dataset (warehouse schema) of its raw layer.
    """
    from core import project

    if name == "TRANSFORM_DIR":
        return project.current().dbt_project_dir
    if name == "PROFILES_DIR":
        return project.current().dbt_profiles_dir
    if name == "RAW_SCHEMA":
        return project.current().raw_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Telemetry off everywhere (offline machine, and nobody asked to be counted).
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
}
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)


def stock() -> bool:
    """Whether the adapters run their orchestrator's stock idiom, every speed lever off."""
    return os.environ.get(STOCK_ENV, "0") not in ("", "0")


def home() -> Path:
    return Path(os.environ.get("QUARTET_HOME", REPO_ROOT)).resolve()


def _project_folder() -> str | None:
    """Another project than the default keeps its warehouses and state in a folder of its own
    (its name), so that its runs never touch nycflights' (None: the default project)."""
    from core import project

    chosen = project.path()
    return None if chosen == project.DEFAULT_PROJECT else project.current().name


def warehouse_dir() -> Path:
    """``warehouse/`` (the default project) or ``warehouse/<project>/``."""
    folder = _project_folder()
    return home() / "warehouse" / folder if folder else home() / "warehouse"


def state_dir(of_home: Path | None = None) -> Path:
    """Gitignored root of generated state: dlt working dirs, dbt targets, orchestrator homes
    (of this process's QUARTET_HOME, or of ``of_home``); ``.quartet/projects/<project>/`` for
    another project than the default."""
    folder = _project_folder()
    root = (of_home or home()) / ".quartet"
    return root / "projects" / folder if folder else root


@dataclass(frozen=True)
class PipelineSettings:
    """Where one named pipeline (bare, dagster, ...) keeps its warehouse and working state."""

    name: str
    warehouse: Path
    pipelines_dir: Path
    dbt_target_dir: Path
    dbt_log_dir: Path
    #: the PostgreSQL warehouse of this run (QUARTET_WAREHOUSE_URL), None for DuckDB
    warehouse_url: str | None = None

    @property
    def pipeline_name(self) -> str:
        return f"quartet_{self.name}"

    @property
    def location(self) -> str | Path:
        """Where the warehouse is: its PostgreSQL URL, else the DuckDB file."""
        return self.warehouse_url or self.warehouse

    def dbt_env(self) -> dict[str, str]:
        """What transform/profiles.yml reads to reach this pipeline's warehouse: the DuckDB file
        (and DuckDB's memory limit), or the PostgreSQL target and the URL's parts."""
        return {
            WAREHOUSE_ENV: str(self.warehouse),
            **dbt_target_env(self.warehouse_url),
            **duckdb_memory_env(),
        }


def warehouse_url() -> str | None:
    """The PostgreSQL warehouse URL (QUARTET_WAREHOUSE_URL), or None: DuckDB files."""
    return os.environ.get(WAREHOUSE_URL_ENV) or None


def dbt_target_env(url: str | None) -> dict[str, str]:
    """transform/profiles.yml's target: its postgres target at ``url``, else DuckDB (None)."""
    if not url:
        return {DBT_TARGET_ENV: "duckdb"}
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return {
        DBT_TARGET_ENV: "postgres",
        "QUARTET_PG_HOST": parts.hostname or "127.0.0.1",
        "QUARTET_PG_PORT": str(parts.port or 5432),
        "QUARTET_PG_USER": unquote(parts.username or "postgres"),
        "QUARTET_PG_PASSWORD": unquote(parts.password or ""),
        "QUARTET_PG_DBNAME": parts.path.lstrip("/") or "postgres",
    }


def export_dbt_env(pipeline: PipelineSettings) -> PipelineSettings:
    """Set what dbt's profile reads for ``pipeline`` in this process's environment, where dbt
    runs in-process or in a child that inherits it (dbt reads its profile from the environment:
    it is the one setting that cannot travel as a value). Returns ``pipeline``."""
    os.environ.update(pipeline.dbt_env())
    return pipeline


def for_pipeline(name: str) -> PipelineSettings:
    """Settings for pipeline ``name``: a value, read from the environment and changing none of
    it (what dbt's profile reads is set where dbt runs: :func:`export_dbt_env`)."""
    if name not in PIPELINE_NAMES and not name.replace("_", "").isalnum():
        raise ValueError(f"invalid pipeline name {name!r}")
    warehouse = warehouse_dir() / f"{name}.duckdb"
    root = state_dir() / name
    settings = PipelineSettings(
        name=name,
        warehouse=warehouse,
        pipelines_dir=root / "dlt",
        # its own dbt target dir on PostgreSQL: partial parsing is per profile
        dbt_target_dir=root / "dbt" / ("target-postgres" if warehouse_url() else "target"),
        dbt_log_dir=root / "dbt" / "logs",
        warehouse_url=warehouse_url(),
    )
    return settings


def duckdb_memory_env() -> dict[str, str]:
    """QUARTET_DUCKDB_MEMORY_LIMIT for dbt's profile, from [performance] duckdb_memory_limit
    (nothing when the config is broken: the run itself reports that, by name, before dbt runs)."""
    from core.failures import ConfigError
    from core.ingestion import load_config  # here: core.ingestion imports settings

    try:
        return {DUCKDB_MEMORY_ENV: load_config().duckdb_memory_limit}
    except ConfigError:
        return {}


def manifest_path() -> Path:
    """The prepared dbt manifest every run and every orchestrator reuses."""
    return state_dir() / "dbt-manifest" / "manifest.json"


def orchestrator_dir(name: str) -> Path:
    """Everything one orchestrator generates: ``.quartet/<name>/`` (home, logs, service state)."""
    return state_dir() / name


def orchestrator_home(name: str) -> Path:
    """The orchestrator's own home (DAGSTER_HOME, AIRFLOW_HOME, PREFECT_HOME, Temporal's db)."""
    path = orchestrator_dir(name) / "home"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir(name: str) -> Path:
    """Where an orchestrator's detailed logs and its services' logs go."""
    path = orchestrator_dir(name) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def venvs_dir() -> Path:
    """Where the orchestrators' environments live (QUARTET_VENVS; default .venvs/)."""
    return Path(os.environ.get("QUARTET_VENVS") or REPO_ROOT / ".venvs")


def venv_python(name: str) -> Path:
    """The interpreter of an orchestrator's own environment (.venvs/<name>)."""
    return venvs_dir() / name / "bin" / "python"


def shown_path(path: Path) -> Path:
    """``path`` as a person reads it in a message: relative to the working directory when inside it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)
