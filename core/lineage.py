"""Canonical lineage: raw tables (from the dlt source's schema) -> dbt models (from the manifest).

The graph every orchestrator's declared graph is held against (tests/parity, ``quartet lineage``):

* nodes: ``raw.<table>`` for each dlt resource, and each dbt model by name, with its layer;
* edges: ``raw.<table> -> stg_*`` (dbt sources resolved to dlt tables) and model -> model refs;
* tests: per node, the dbt data tests and unit tests attached to it (a test on a raw table, e.g.
  a source test, is attached to ``raw.<table>``).

Node ids are the lingua franca: an orchestrator adapter maps its own keys (asset keys, task ids,
activity names) onto them and exports a :class:`Graph`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from core import settings


@dataclass
class Graph:
    nodes: dict[str, str] = field(default_factory=dict)  # id -> layer (raw, staging, ...)
    edges: set[tuple[str, str]] = field(default_factory=set)
    tests: dict[str, set[str]] = field(default_factory=dict)  # node id -> test names

    def to_json(self) -> dict:
        return {
            "nodes": [{"id": n, "layer": self.nodes[n]} for n in sorted(self.nodes)],
            "edges": sorted([list(e) for e in self.edges]),
            "tests": {n: sorted(t) for n, t in sorted(self.tests.items()) if t},
        }

    @classmethod
    def from_json(cls, data: dict) -> Graph:
        return cls(
            nodes={n["id"]: n["layer"] for n in data["nodes"]},
            edges={(a, b) for a, b in data["edges"]},
            tests={n: set(t) for n, t in data.get("tests", {}).items()},
        )

    def difference(self, other: Graph) -> list[str]:
        """Human-readable differences of ``other`` against this graph (empty when equal)."""
        problems = []
        for label, mine, theirs in (
            ("node", set(self.nodes), set(other.nodes)),
            ("edge", self.edges, other.edges),
        ):
            problems += [f"missing {label} {x}" for x in sorted(mine - theirs, key=str)]
            problems += [f"unexpected {label} {x}" for x in sorted(theirs - mine, key=str)]
        for node in sorted(set(self.tests) | set(other.tests)):
            a, b = self.tests.get(node, set()), other.tests.get(node, set())
            if a != b:
                problems.append(
                    f"tests of {node}: missing {sorted(a - b)}, unexpected {sorted(b - a)}"
                )
        return problems

    def parents(self, node: str) -> set[str]:
        return {a for a, b in self.edges if b == node}

    def order(self, nodes: Iterable[str] | None = None) -> list[str]:
        """``nodes`` (default: all) in dependency order, ties by name; raises on a cycle."""
        remaining = set(self.nodes if nodes is None else nodes)
        parents = {n: self.parents(n) & remaining for n in remaining}
        done: set[str] = set()
        order: list[str] = []
        while remaining:
            ready = sorted(n for n in remaining if parents[n] <= done)
            if not ready:
                raise ValueError(f"the graph has a cycle among {sorted(remaining)}")
            order += ready
            done |= set(ready)
            remaining -= set(ready)
        return order

    def to_mermaid(self, title: str | None = None) -> str:
        layers: dict[str, list[str]] = {}
        for node, layer in sorted(self.nodes.items()):
            layers.setdefault(layer, []).append(node)
        lines = ["flowchart LR"]
        if title:
            lines.insert(0, f"%% {title}")
        ids = {node: node.replace(".", "_") for node in self.nodes}
        depth: dict[str, int] = {}  # the longest path from a raw table to each node
        for node in self.order():
            depth[node] = max((depth[p] + 1 for p in self.parents(node)), default=0)
        # raw first, then the layers in the order they are built (by their deepest node)
        for layer in sorted(layers, key=lambda name: (max(depth[n] for n in layers[name]), name)):
            lines.append(f"  subgraph {layer}")
            for node in layers[layer]:
                count = len(self.tests.get(node, ()))
                label = f"{node}<br/>{count} tests" if count else node
                lines.append(f'    {ids[node]}["{label}"]')
            lines.append("  end")
        for a, b in sorted(self.edges):
            lines.append(f"  {ids[a]} --> {ids[b]}")
        return "\n".join(lines) + "\n"


def raw_tables() -> list[str]:
    """The raw tables: one per resource the project declares (dlt names the table after it)."""
    from core import project

    return sorted(project.current().resource_names)


def dbt_node_id(manifest: dict, unique_id: str) -> str:
    """The canonical id of a manifest node: ``raw.<table>`` for sources, the name for models."""
    if unique_id.startswith("source."):
        source = manifest["sources"][unique_id]
        return f"{settings.RAW_SCHEMA}.{source['identifier'] or source['name']}"
    return manifest["nodes"][unique_id]["name"]


def canonical(manifest: dict | None = None) -> Graph:
    from core import dbt

    manifest = manifest or dbt.load_manifest()
    graph = Graph()
    tables = raw_tables()
    for table in tables:
        graph.nodes[f"{settings.RAW_SCHEMA}.{table}"] = "raw"
    for source in manifest["sources"].values():  # joined to the dlt tables by relation
        table = source["identifier"] or source["name"]
        if source["schema"] != settings.RAW_SCHEMA or table not in tables:
            raise ValueError(
                f"dbt source {source['source_name']}.{source['name']} reads "
                f"{source['schema']}.{table}, which the dlt source does not load (it loads "
                f"{', '.join(f'{settings.RAW_SCHEMA}.{t}' for t in tables)})"
            )
    for _unique_id, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        graph.nodes[node["name"]] = node["config"].get("schema") or "main"
        for parent in node["depends_on"]["nodes"]:
            graph.edges.add((dbt_node_id(manifest, parent), node["name"]))
    for _unique_id, node in manifest["nodes"].items():
        if node["resource_type"] != "test":
            continue
        attached = node.get("attached_node") or (node["depends_on"]["nodes"] or [None])[0]
        if attached:
            graph.tests.setdefault(dbt_node_id(manifest, attached), set()).add(node["name"])
    for unit_test in manifest.get("unit_tests", {}).values():
        model = unit_test["depends_on"]["nodes"][0]
        graph.tests.setdefault(dbt_node_id(manifest, model), set()).add(unit_test["name"])
    return graph


def dump(graph: Graph, fmt: str = "text", title: str | None = None) -> str:
    if fmt == "json":
        return json.dumps(graph.to_json(), indent=2)
    if fmt == "mermaid":
        return graph.to_mermaid(title)
    lines = [
        f"{len(graph.nodes)} nodes, {len(graph.edges)} edges, "
        f"{sum(len(t) for t in graph.tests.values())} tests"
    ]
    for a, b in sorted(graph.edges):
        lines.append(f"  {a} -> {b}")
    return "\n".join(lines)
