"""Every warehouse table as an Airflow Asset: the raw tables from the resources the project
declares, the dbt models from the manifest (names, schemas, parents). The tasks declare them as
outlets and inlets, and the graph's leaf models schedule a DAG."""

from __future__ import annotations

from airflow.sdk import Asset

from core import dbt, project, settings
from core.failures import ConfigError
from orchestrators.airflow import NAME

MANIFEST_PATH = dbt.prepare_manifest()
MANIFEST = dbt.load_manifest()


def table_asset(schema: str, table: str) -> Asset:
    return Asset(
        name=f"{schema}.{table}", uri=f"duckdb://quartet/{NAME}/{schema}/{table}", group=schema
    )


#: dlt resource -> the raw table dlt loads it into (the project's dataset, named after it)
RAW = {name: table_asset(settings.RAW_SCHEMA, name) for name in project.current().resource_names}
#: dbt model unique id -> its table (a model without a schema of its own lands in ``main``)
MODELS = {
    unique_id: table_asset(node["config"].get("schema") or "main", node["name"])
    for unique_id, node in MANIFEST["nodes"].items()
    if node["resource_type"] == "model"
}


def raw_table(source: dict) -> Asset:
    """The raw table a dbt source reads, matched by relation (its schema and identifier): a dbt
    project names its sources as it likes, dlt names the table after the resource."""
    schema, table = source["schema"], source["identifier"] or source["name"]
    if schema != settings.RAW_SCHEMA or table not in RAW:
        raise ConfigError(
            f"dbt source {source['source_name']}.{source['name']} reads {schema}.{table}, which "
            f"the project's dlt source does not load (it loads {', '.join(a.name for a in RAW.values())})"
        )
    return RAW[table]


#: dbt source unique id -> the raw table it names
SOURCES = {unique_id: raw_table(source) for unique_id, source in MANIFEST["sources"].items()}


def parent_ids(unique_id: str) -> list[str]:
    """The manifest ids of what a model reads (models and sources)."""
    return MANIFEST["nodes"][unique_id]["depends_on"]["nodes"]


def parents(unique_id: str) -> list[Asset]:
    """The tables a model reads (its dbt parents)."""
    return [MODELS.get(p) or SOURCES[p] for p in parent_ids(unique_id)]


#: the graph's leaves: the models no other model reads, whatever their schema. They are what
#: the pipeline publishes, and once all are rebuilt, so is everything upstream of them.
LEAVES = [
    asset
    for unique_id, asset in MODELS.items()
    if not any(unique_id in parent_ids(other) for other in MODELS)
]
