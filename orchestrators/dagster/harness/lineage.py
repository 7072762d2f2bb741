"""The lineage Dagster itself declares (its asset graph and asset checks) as a core Graph."""

from __future__ import annotations

import dagster as dg
from dagster_dbt.asset_utils import get_manifest_and_translator_from_dbt_assets

from core import settings
from core.lineage import Graph


def is_raw(key: dg.AssetKey) -> bool:
    """Whether ``key`` is a raw table: a dlt asset, keyed [raw dataset, table] (assets.py)."""
    return key.path[0] == settings.RAW_SCHEMA


def node_id(key: dg.AssetKey) -> str:
    """``<raw dataset>/<table>`` -> ``<raw dataset>.<table>``; ``<schema>/<model>`` -> ``<model>``."""
    if is_raw(key):
        return f"{settings.RAW_SCHEMA}.{key.path[-1]}"
    return key.path[-1]


def declared_graph(defs: dg.Definitions | None = None) -> Graph:
    """The asset graph of ``defs`` (default: the pipeline's code location) as canonical ids."""
    if defs is None:
        from orchestrators.dagster.definitions import defs
    assets = defs.resolve_asset_graph()
    graph = Graph()
    for key in assets.get_all_asset_keys():
        node = assets.get(key)
        # the raw tables' group is their dataset (``raw``, ``shop_raw``); canonically the layer
        graph.nodes[node_id(key)] = "raw" if is_raw(key) else node.group_name
        graph.edges |= {(node_id(parent), node_id(key)) for parent in node.parent_keys}
    for check in assets.asset_check_keys:  # dbt data tests (source tests included)
        graph.tests.setdefault(node_id(check.asset_key), set()).add(check.name)
    # dbt unit tests run inside the dbt op's `dbt build` and block their model, but dagster-dbt
    # 0.29 declares no asset check for them: read them from the manifest the op carries.
    dbt_defs = [a for a in defs.assets or () if isinstance(a, dg.AssetsDefinition)]
    for assets_def in dbt_defs:
        try:
            manifest, translator, _ = get_manifest_and_translator_from_dbt_assets([assets_def])
        except dg.DagsterInvariantViolationError:  # not a @dbt_assets definition
            continue
        for unit_test in manifest.get("unit_tests", {}).values():
            model = unit_test["depends_on"]["nodes"][0]
            key = translator.get_asset_spec(manifest, model, None).key
            graph.tests.setdefault(node_id(key), set()).add(unit_test["name"])
    return graph
