"""The graph the Prefect flows declare, mapped onto canonical ids.

Prefect has no static DAG: a flow declares its graph as it runs, through the assets its tasks
materialize. This module asks the same declarations without running anything:

* ingestion: the asset each ``ingest <resource>`` task materializes (:func:`flows.raw_asset`);
* dbt: the asset, upstream assets and upstream nodes prefect-dbt's ``PrefectDbtRunner`` gives the
  task it creates for each manifest node (models and their upstream models/sources; tests and
  unit tests wait for the nodes they test).

Asset keys (``duckdb://prefect/raw/flights``) map to canonical ids (``raw.flights``) through the
manifest's relation names.
"""

from __future__ import annotations

from types import SimpleNamespace

from core import lineage, settings
from core.ingestion import load_config
from orchestrators.prefect import NAME


def declared_graph() -> lineage.Graph:
    from dbt.contracts.graph.manifest import Manifest
    from dbt.node_types import NodeType
    from prefect_dbt import PrefectDbtRunner

    from core import dbt
    from orchestrators.prefect.flows import dbt_settings, raw_asset

    manifest_dict = dbt.load_manifest()
    manifest = Manifest.from_dict(manifest_dict)
    # Planning only: the runner never talks to the API here (a client would start a server).
    pipeline = settings.for_pipeline(NAME, export=False)
    runner = PrefectDbtRunner(
        manifest=manifest, settings=dbt_settings(pipeline), client=SimpleNamespace()
    )
    adapter = manifest.metadata.adapter_type
    database = pipeline.warehouse.stem

    def canonical_id(asset_key: str) -> str:
        _, _, path = asset_key.partition("://")
        _db, schema, table = path.split("/")
        return f"{schema}.{table}" if schema == settings.RAW_SCHEMA else table

    def key(node) -> str:
        # the prepared manifest was parsed against another file: key on this warehouse's name
        asset = runner._create_asset_from_node(node, adapter)
        return asset.key.replace(f"://{node.database}/", f"://{database}/", 1)

    graph = lineage.Graph()
    for resource in load_config().resources:
        graph.nodes[canonical_id(raw_asset(resource).key)] = "raw"
    for node in manifest.nodes.values():
        if node.resource_type != NodeType.Model:
            continue
        me = canonical_id(key(node))
        graph.nodes[me] = node.config.schema or "main"
        for upstream, _config in runner._get_upstream_manifest_nodes_and_configs(node):
            graph.edges.add((canonical_id(key(upstream)), me))
    tests = [n for n in manifest.nodes.values() if n.resource_type == NodeType.Test]
    for test in [*tests, *manifest.unit_tests.values()]:
        upstream = runner._get_upstream_manifest_nodes_and_configs(test)
        # a test waits for every node it reads; dbt attaches it to the one it is defined on
        attached = getattr(test, "attached_node", None)
        targets = [u for u, _ in upstream if u.unique_id == attached] or [u for u, _ in upstream]
        graph.tests.setdefault(canonical_id(key(targets[0])), set()).add(test.name)
    del manifest_dict
    return graph
