"""The flows, tasks and deployments load, and declare the canonical graph (no server, no run)."""

from __future__ import annotations

import pytest

from core import kit, lineage
from core.ingestion import ConfigError
from orchestrators.prefect import NEW_DATA_EVENT
from tests.helpers import expected


def test_flows_and_deployments_load() -> None:
    from orchestrators.prefect.deployments import TAG, deployments
    from orchestrators.prefect.flows import backfill, ingest_task, ingestion, pipeline

    assert set(pipeline.parameters.properties) == {"as_of", "partitions"}
    assert set(ingestion.parameters.properties) == {"as_of", "partition", "resources"}
    assert set(backfill.parameters.properties) == {"start", "end", "as_of"}

    policy = kit.policy()
    for resource in expected().resources:
        task = ingest_task(resource)
        assert task.retries == policy.unit_retries
        assert task.retry_delay_seconds == policy.retry_delays()
        assert [a.key for a in task.assets] == [f"duckdb://prefect/raw/{resource}"]

    by_name = {f"{d.flow_name}/{d.name}": d for d in deployments()}
    assert set(by_name) == {
        "quartet-pipeline/full",
        "quartet-ingestion/ingestion",
        "quartet-transformation/transformation",
        "quartet-backfill/backfill",
        "quartet-source-watcher/poll",
    }
    for deployment in by_name.values():
        assert deployment.entrypoint.startswith("orchestrators.prefect.")
        assert TAG in deployment.tags
    full = by_name["quartet-pipeline/full"]
    assert [s.schedule.cron for s in full.schedules] == [policy.schedule]
    (trigger,) = full.triggers
    assert trigger.expect == {NEW_DATA_EVENT}
    assert trigger.parameters == {"as_of": "{{ event.payload.as_of }}"}
    poll = by_name["quartet-source-watcher/poll"].schedules[0].schedule
    assert poll.interval.total_seconds() == policy.source_poll_seconds


def test_only_transient_errors_are_retried() -> None:
    """A wrong token, a malformed record, a bad setting, a failing dbt node: no retry."""
    from core.dbt import DbtBuildError
    from core.pipeline import IngestionError
    from core.source import MalformedRecordError
    from orchestrators.prefect.flows import is_permanent

    def wrapped(cause: Exception) -> Exception:
        try:
            raise IngestionError("ingesting flights failed") from cause
        except IngestionError as exc:
            return exc

    assert is_permanent(wrapped(MalformedRecordError("flights.dep_delay: 'x' is no integer")))
    assert is_permanent(IngestionError("... HTTPError: 401 Client Error: Unauthorized"))
    assert is_permanent(ConfigError("partition must look like YYYY-MM"))
    assert is_permanent(DbtBuildError("dbt build failed", []))
    assert not is_permanent(wrapped(ConnectionResetError("connection reset by peer")))
    assert not is_permanent(IngestionError("... HTTPError: 503 Server Error"))


def test_backfill_months_and_deployment_choice() -> None:
    from core.kit import RunRequest
    from orchestrators.prefect.deploy import deployment_for
    from orchestrators.prefect.flows import month_range

    assert month_range("2012-11", "2013-02") == ["2012-11", "2012-12", "2013-01", "2013-02"]
    with pytest.raises(ConfigError):
        month_range("2013-03", "2013-01")
    name, params = deployment_for(RunRequest("prefect", partitions=("2013-02", "2013-01")))
    assert (name, params["start"], params["end"]) == (
        "quartet-backfill/backfill",
        "2013-01",
        "2013-02",
    )
    name, params = deployment_for(RunRequest("prefect", as_of="2013-01-31"))
    assert (name, params) == ("quartet-pipeline/full", {"as_of": "2013-01-31", "partitions": None})


def test_lineage_equals_canonical(quartet_home) -> None:
    from orchestrators.prefect.lineage import declared_graph

    declared = declared_graph()
    assert lineage.canonical().difference(declared) == []
    assert declared.nodes["raw.flights"] == "raw"
    assert ("raw.flights", "stg_flights") in declared.edges


def test_dbt_node_task_runs_can_share_the_flow_context() -> None:
    """``flows.node_task_runs_share_flow_context`` replaces two names prefect-dbt imported from
    Prefect: an upgrade of prefect-dbt that renames or stops using them must fail here rather than
    quietly make every node's task run rebuild its settings and clients again (ADR 0008)."""
    import inspect

    from prefect.context import hydrated_context, serialize_context
    from prefect_dbt.core import _tracker, runner

    from orchestrators.prefect.flows import node_task_runs_share_flow_context

    assert runner.serialize_context is serialize_context
    assert _tracker.hydrated_context is hydrated_context
    assert "serialize_context()" in inspect.getsource(runner.PrefectDbtRunner.invoke)
    assert "hydrated_context(context)" in inspect.getsource(
        _tracker.NodeTaskTracker.run_task_in_thread
    )
    with node_task_runs_share_flow_context():  # outside a flow run: changes nothing
        assert _tracker.hydrated_context is hydrated_context
