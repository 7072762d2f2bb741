"""The flows, tasks and deployments load, and declare the canonical graph (no server needed)."""

from __future__ import annotations

from core import lineage
from core.ingestion import load_config
from orchestrators.prefect import NEW_DATA_EVENT, WAREHOUSE_LIMIT


def test_flows_and_deployments_load() -> None:
    from orchestrators.prefect.deployments import MONTHLY_CRON, deployments
    from orchestrators.prefect.flows import ingest_task, ingestion, pipeline, transformation

    assert {f.name for f in (pipeline, ingestion, transformation)} == {
        "quartet-pipeline",
        "quartet-ingestion",
        "quartet-transformation",
    }
    assert set(pipeline.parameters.properties) == {"as_of", "partitions"}
    assert set(ingestion.parameters.properties) == {"as_of", "partition", "resources"}
    for flow in (pipeline, ingestion, transformation):
        assert [hook.__name__ for hook in flow.on_failure_hooks] == ["alert_on_failure"]

    for resource in load_config().resources:
        task = ingest_task(resource)
        assert task.retries == 3 and task.retry_condition_fn is not None
        assert [a.key for a in task.assets] == [f"duckdb://prefect/raw/{resource}"]

    by_name = {f"{d.flow_name}/{d.name}": d for d in deployments()}
    assert set(by_name) == {
        "quartet-pipeline/monthly",
        "quartet-ingestion/ingestion-only",
        "quartet-transformation/transformation-only",
        "quartet-source-watcher/poll",
    }
    monthly = by_name["quartet-pipeline/monthly"]
    assert [s.schedule.cron for s in monthly.schedules] == [MONTHLY_CRON]
    (trigger,) = monthly.triggers
    assert trigger.expect == {NEW_DATA_EVENT}
    assert trigger.parameters == {"as_of": "{{ event.payload.as_of }}"}
    assert monthly.entrypoint == "orchestrators.prefect.flows.pipeline"
    assert by_name["quartet-source-watcher/poll"].schedules[0].schedule.interval.total_seconds() > 0
    assert WAREHOUSE_LIMIT == "quartet-warehouse-prefect"


def test_lineage_equals_canonical(quartet_home) -> None:
    from orchestrators.prefect.lineage import declared_graph

    declared = declared_graph()
    assert lineage.canonical().difference(declared) == []
    assert declared.nodes["raw.flights"] == "raw"
    assert ("raw.flights", "stg_flights") in declared.edges
