"""The graph the Prefect flows declare, mapped onto canonical ids.

Prefect has no static DAG: a flow declares its graph as it runs, through the assets its tasks
materialize and the tasks each task waits for. This module derives the same declarations from
what the flows schedule, without running anything:

* ingestion: the asset each ``ingest <resource>`` task materializes (:func:`flows.raw_asset`),
  for every resource the project declares: its table in the project's raw schema;
* dbt: ``PrefectDbtRunner`` turns each node of the manifest into a task that materializes the
  node's relation (asset key ``format_resource_id(adapter, relation_name)``) and waits for the
  nodes in its ``depends_on``; a data test or unit test runs after the node it is attached to.

Asset keys map to canonical ids: ``duckdb://prefect/<raw schema>/<table>`` to
``<raw schema>.<table>``, any other relation to its model's name. A dbt source is keyed by its
relation (its schema and identifier), so it is the very asset the ingestion task of that table
materializes, whatever the source is named in dbt.
"""

from __future__ import annotations

from core import lineage, settings
from core.ingestion import load_config
from orchestrators.prefect import NAME


def canonical_id(asset_key: str) -> str:
    """``<adapter>://<database>/<schema>/<table>`` as a canonical id (see the module doc)."""
    _, _, path = asset_key.partition("://")
    _db, schema, table = path.split("/")
    return f"{schema}.{table}" if schema == settings.RAW_SCHEMA else table


def declared_graph() -> lineage.Graph:
    from prefect_dbt.utilities import format_resource_id

    from core import dbt
    from orchestrators.prefect.flows import raw_asset

    manifest = dbt.load_manifest()
    adapter = manifest["metadata"]["adapter_type"]
    database = settings.for_pipeline(NAME).warehouse.stem
    nodes = {**manifest["nodes"], **manifest["sources"]}

    def asset_id(unique_id: str) -> str:
        node = nodes[unique_id]
        # the prepared manifest was parsed against another file: key on this warehouse's name
        relation = node["relation_name"].replace(f'"{node["database"]}".', f'"{database}".', 1)
        return canonical_id(format_resource_id(adapter, relation))

    graph = lineage.Graph()
    for resource in load_config().resources:
        graph.nodes[canonical_id(raw_asset(resource).key)] = "raw"
    for unique_id, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        me = asset_id(unique_id)
        graph.nodes[me] = node["config"].get("schema") or "main"
        for upstream in node["depends_on"]["nodes"]:
            if upstream in nodes:
                graph.edges.add((asset_id(upstream), me))
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    for test in [*tests, *manifest.get("unit_tests", {}).values()]:
        upstream = [u for u in test["depends_on"]["nodes"] if u in nodes]
        attached = test.get("attached_node")
        target = attached if attached in nodes else upstream[0]
        graph.tests.setdefault(asset_id(target), set()).add(test["name"])
    return graph
