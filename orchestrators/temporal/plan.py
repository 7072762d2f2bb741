"""The workflow's plan: which units a run has and in which order, from core's canonical graph.

The ``plan`` activity returns it (reading the dbt manifest is I/O, so the result is recorded in
history and a replay sees the same plan); ``lineage`` prints it as a :class:`core.lineage.Graph`.

* Models are ordered by their ref edges only: a test never orders models, so tests that read
  models both ways (``relationships`` between customers, orders and order_items) cannot make
  a cycle.
* A test belongs to its model by core.lineage's rule (its ``attached_node``, else its first
  parent): that is what a model's line counts and what ``lineage`` shows.
* A test runs in the build of the last model it reads, in plan order, so every table it reads is
  built first; a test of a raw table (a source test) runs with each model that reads that table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core import settings


@dataclass
class ModelStep:
    """One dbt model: built, with the tests in ``runs``, once the models in ``after`` are."""

    name: str
    layer: str
    upstream: list[str]  # lineage parents: raw.<table> and models
    after: list[str]  # the models it refs
    tests: list[str]  # its own tests (core.lineage's rule)
    runs: list[str] = field(default_factory=list)  # the tests its build runs


@dataclass
class Plan:
    resources: list[str]
    raw_tests: dict[str, list[str]]  # raw.<table> -> its tests
    models: list[ModelStep]  # dependency order


def build_plan(manifest: dict | None = None) -> Plan:
    """One ingestion per dlt resource, one build per dbt model in ref order."""
    from core import dbt, lineage

    manifest = manifest or dbt.load_manifest()
    graph = lineage.canonical(manifest)
    models = {n: layer for n, layer in graph.nodes.items() if layer != "raw"}
    raw = sorted(n for n, layer in graph.nodes.items() if layer == "raw")
    upstream = {m: sorted(graph.parents(m)) for m in models}
    refs = {m: [u for u in upstream[m] if u in models] for m in models}
    order = lineage.Graph(nodes=models, edges={(a, m) for m in models for a in refs[m]}).order()
    rank = {m: i for i, m in enumerate(order)}

    runs: dict[str, set[str]] = {m: set() for m in models}
    of_raw_only: set[str] = set()  # tests that read no model: they run with the raw table's readers
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test":
            continue
        read = {lineage.dbt_node_id(manifest, p) for p in node["depends_on"]["nodes"]} & set(models)
        if read:
            runs[max(read, key=rank.__getitem__)].add(node["name"])
        else:
            of_raw_only.add(node["name"])
    for unit_test in manifest.get("unit_tests", {}).values():
        model = lineage.dbt_node_id(manifest, unit_test["depends_on"]["nodes"][0])
        runs[model].add(unit_test["name"])
    for m in models:
        runs[m] |= {
            t for u in upstream[m] if u in raw for t in graph.tests.get(u, set()) & of_raw_only
        }

    return Plan(
        resources=[n.removeprefix(f"{settings.RAW_SCHEMA}.") for n in raw],
        raw_tests={n: sorted(graph.tests[n]) for n in raw if graph.tests.get(n)},
        models=[
            ModelStep(
                name=m,
                layer=models[m],
                upstream=upstream[m],
                after=refs[m],
                tests=sorted(graph.tests.get(m, ())),
                runs=sorted(runs[m]),
            )
            for m in order
        ],
    )
