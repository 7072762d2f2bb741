"""Every warehouse table as an Airflow Asset, read from the dbt manifest (names, schemas,
parents): the tasks declare them as outlets and inlets, and the marts schedule a DAG."""

from __future__ import annotations

from airflow.sdk import Asset

from core import dbt, settings
from core.ingestion import load_config
from orchestrators.airflow import NAME

MANIFEST_PATH = dbt.prepare_manifest()
MANIFEST = dbt.load_manifest()
MARTS_SCHEMA = "marts"


def table_asset(schema: str, table: str) -> Asset:
    return Asset(
        name=f"{schema}.{table}", uri=f"duckdb://quartet/{NAME}/{schema}/{table}", group=schema
    )


RAW = {r: table_asset(settings.RAW_SCHEMA, r) for r in load_config().resources}
#: dbt model unique id -> its table
MODELS = {
    unique_id: table_asset(node["config"]["schema"], node["name"])
    for unique_id, node in MANIFEST["nodes"].items()
    if node["resource_type"] == "model"
}
#: dbt source unique id -> the raw table it names
SOURCES = {
    unique_id: RAW[source["identifier"] or source["name"]]
    for unique_id, source in MANIFEST["sources"].items()
}
#: the models dbt_project.yml puts in the marts schema
MARTS = [asset for asset in MODELS.values() if asset.group == MARTS_SCHEMA]


def parents(unique_id: str) -> list[Asset]:
    """The tables a model reads (its dbt parents)."""
    return [
        MODELS.get(p) or SOURCES[p] for p in MANIFEST["nodes"][unique_id]["depends_on"]["nodes"]
    ]
