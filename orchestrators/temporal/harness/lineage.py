"""The graph the workflow declares: what :func:`plan.build_plan` schedules, as canonical ids."""

from __future__ import annotations

from core import lineage, settings
from orchestrators.temporal.plan import build_plan


def declared_graph() -> lineage.Graph:
    plan = build_plan()
    graph = lineage.Graph()
    for resource in plan.resources:
        graph.nodes[f"{settings.RAW_SCHEMA}.{resource}"] = "raw"
    for node, tests in plan.raw_tests.items():
        graph.tests[node] = set(tests)
    for step in plan.models:
        graph.nodes[step.name] = step.layer
        graph.edges |= {(parent, step.name) for parent in step.upstream}
        if step.tests:
            graph.tests[step.name] = set(step.tests)
    return graph
