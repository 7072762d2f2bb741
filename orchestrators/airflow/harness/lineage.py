"""The graph the pipeline DAG declares, mapped onto the canonical node ids.

* nodes and edges: the Assets of every task (``outlets`` are the tables a task writes,
  ``inlets`` the tables it reads), as the DAG declares them - the graph the Assets view shows;
* tests: the dbt tests each Cosmos task runs (its dbt node, or ``source:*`` for the raw-table
  tests), placed on the node dbt attaches them to.
"""

from __future__ import annotations

import contextlib
import sys

from core import dbt, settings
from core.lineage import Graph, dbt_node_id
from orchestrators.airflow import PIPELINE_DAG


def node_id(asset) -> str:
    """``<raw schema>.<table>`` for raw tables, the model name for dbt tables."""
    return asset.name if asset.group == settings.RAW_SCHEMA else asset.name.split(".", 1)[1]


def layer(asset) -> str:
    """The canonical layer of a table: ``raw`` for the raw tables (whatever the project's raw
    dataset is called), else the schema dbt puts the model in."""
    return "raw" if asset.group == settings.RAW_SCHEMA else asset.group


def declared_graph(dag=None) -> Graph:
    from orchestrators.airflow.harness.run import load_dag

    if dag is None:
        with contextlib.redirect_stdout(sys.stderr):  # Airflow's parsing logs go to stdout
            dag = load_dag(PIPELINE_DAG)
    manifest = dbt.load_manifest()
    graph = Graph()
    dbt_group = dag.task_group_dict["dbt"]
    dbt_nodes = dbt_group.dbt_graph.filtered_nodes

    def attach(test_id: str) -> None:
        test = manifest["nodes"][test_id]
        attached = test.get("attached_node") or test["depends_on"]["nodes"][0]
        graph.tests.setdefault(dbt_node_id(manifest, attached), set()).add(test["name"])

    for task in dag.tasks:
        for asset in task.outlets:
            graph.nodes[node_id(asset)] = layer(asset)
            graph.edges |= {(node_id(i), node_id(asset)) for i in task.inlets}
        config = getattr(task, "extra_context", {}).get("dbt_node_config")
        if config and config["resource_type"] == "model":  # dbt build --select <model>
            unique_id = config["unique_id"]
            for node in dbt_nodes.values():
                if node.resource_type.value == "test" and node.depends_on == [unique_id]:
                    attach(node.unique_id)
            for unit_test in manifest.get("unit_tests", {}).values():
                if unit_test["depends_on"]["nodes"][:1] == [unique_id]:
                    graph.tests.setdefault(config["name"], set()).add(unit_test["name"])
        elif config and config["resource_type"] == "test":  # a detached multi-parent test
            attach(config["unique_id"])
        elif getattr(task, "select", None) == ["source:*"]:  # the raw-table tests
            for node in dbt_nodes.values():
                if node.resource_type.value == "test" and all(
                    d.startswith("source.") for d in node.depends_on
                ):
                    attach(node.unique_id)
    return graph
