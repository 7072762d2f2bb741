"""The dbt project and what every asset shares: the project, the pipeline's settings, policy
and pool.

Everything derives from ``core.settings`` (QUARTET_HOME) and the Quartet project
(QUARTET_PROJECT) when this module is imported, so import it after both are set.
"""

from __future__ import annotations

from dagster_dbt import DbtProject

from core import kit, settings
from core.ingestion import load_config
from core.project import current
from core.warehouse import allows_parallel_writers
from orchestrators.dagster.policy import honoured

NAME = "dagster"
#: the Quartet project this code location runs (its quartet.toml: source, partitions, dbt)
PROJECT = current()
# dbt's profile (the project's profiles.yml) reads the warehouse from the environment
PIPELINE = settings.export_dbt_env(settings.for_pipeline(NAME))
CONFIG = load_config()
#: [orchestration]: refused here, by field, when Dagster cannot follow it (policy.py)
POLICY = honoured(kit.policy(), PROJECT.partitions.scheme)

#: the dbt project; its manifest is the one core prepares for every orchestrator
#: (``core.dbt.prepare_manifest``), not ``prepare_if_dev()``, which parses under ``dagster dev`` only
DBT_PROJECT = DbtProject(
    project_dir=settings.TRANSFORM_DIR,
    target_path=settings.manifest_path().parent,
    profiles_dir=settings.PROFILES_DIR,
)

#: the one concurrency pool every warehouse writer (dlt and dbt ops) claims
WAREHOUSE_POOL = "quartet_warehouse"
#: whether the configured warehouse admits several writers at once (PostgreSQL: yes, DuckDB: no)
PARALLEL_WRITERS = allows_parallel_writers(PIPELINE.location)
#: the pool's limit: every ingestion unit at once where the engine allows it (the dbt op depends
#: on all of them, so it never competes with them), else one writer at a time (a DuckDB file)
WAREHOUSE_POOL_LIMIT = len(CONFIG.resources) if PARALLEL_WRITERS else 1

#: what dbt itself reported about a node, added to its event's metadata by the dbt asset: when
#: dbt started and finished it (ISO 8601, UTC; the harness's timeline draws these), and for a
#: model the results of its unit tests (dagster-dbt makes no event of a unit test)
DBT_STARTED_AT, DBT_FINISHED_AT = "dbt/started_at", "dbt/finished_at"
UNIT_TESTS_PASSED, UNIT_TESTS_FAILED = "dbt/unit_tests_passed", "dbt/unit_tests_failed"
