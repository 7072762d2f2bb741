"""The flows, tasks and deployments load, and declare the canonical graph (no server, no run)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from core import kit, lineage
from core.failures import ConfigError
from orchestrators.prefect import NEW_DATA_EVENT
from tests.failure_cases import CASES
from tests.helpers import SHOP, expected, in_project


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
        assert task.retry_jitter_factor is None
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


@pytest.mark.parametrize(
    ("make", "retry"), [(make, retry) for _, make, retry in CASES], ids=[c[0] for c in CASES]
)
def test_a_failed_task_is_retried_only_when_a_retry_may_help(make, retry) -> None:
    """The ingestion task's retry_condition_fn, fed a Failed state holding each failure."""
    from prefect.states import Failed

    from orchestrators.prefect.flows import ingest_task

    task = ingest_task("flights")
    state = Failed(data=make(), message="ingest flights failed")
    assert task.retry_condition_fn(task, None, state) is retry


def test_the_policy_is_followed_or_refused_by_name() -> None:
    from orchestrators.prefect.flows import ingest_task

    policy = replace(kit.policy(), unit_retries=3, retry_delay_seconds=2, retry_backoff=3.0)
    task = ingest_task("flights", policy)
    assert (task.retries, task.retry_delay_seconds) == (3, [2, 6, 18])
    assert task.retry_jitter_factor is None  # Prefect adds no jitter of its own

    with pytest.raises(ConfigError, match=r"^prefect cannot honour \[orchestration\] unit_retries"):
        ingest_task("flights", replace(policy, unit_retries=51))
    with pytest.raises(ConfigError, match=r"^prefect cannot honour \[orchestration\] schedule"):
        ingest_task("flights", replace(policy, schedule="monthly please"))


def test_backfill_months_and_deployment_choice() -> None:
    from core.kit import RunRequest
    from orchestrators.prefect.flows import backfill_partitions
    from orchestrators.prefect.harness.deploy import deployment_for

    assert backfill_partitions("2012-11", "2013-02") == [
        "2012-11",
        "2012-12",
        "2013-01",
        "2013-02",
    ]
    with pytest.raises(ConfigError, match="holds no month"):
        backfill_partitions("2013-03", "2013-01")
    with pytest.raises(ConfigError, match="partition must look like YYYY-MM"):
        backfill_partitions("2013-01", "2013-02-01")
    name, params = deployment_for(RunRequest("prefect", partitions=("2013-02", "2013-01")))
    assert (name, params["start"], params["end"]) == (
        "quartet-backfill/backfill",
        "2013-01",
        "2013-02",
    )
    name, params = deployment_for(RunRequest("prefect", as_of="2013-01-31"))
    assert (name, params) == ("quartet-pipeline/full", {"as_of": "2013-01-31", "partitions": None})


def test_lineage_equals_canonical(quartet_home) -> None:
    from orchestrators.prefect.harness.lineage import declared_graph

    declared = declared_graph()
    assert lineage.canonical().difference(declared) == []
    assert declared.nodes["raw.flights"] == "raw"
    assert ("raw.flights", "stg_flights") in declared.edges


def test_dbt_node_task_runs_can_share_the_flow_context() -> None:
    """``levers.node_task_runs_share_flow_context`` replaces two names prefect-dbt imported from
    Prefect: an upgrade of prefect-dbt that renames or stops using them must fail here rather than
    quietly make every node's task run rebuild its settings and clients again (ADR 0008)."""
    import inspect

    from prefect.context import hydrated_context, serialize_context
    from prefect_dbt.core import _tracker, runner

    from orchestrators.prefect.levers import node_task_runs_share_flow_context

    assert runner.serialize_context is serialize_context
    assert _tracker.hydrated_context is hydrated_context
    assert "serialize_context()" in inspect.getsource(runner.PrefectDbtRunner.invoke)
    assert "hydrated_context(context)" in inspect.getsource(
        _tracker.NodeTaskTracker.run_task_in_thread
    )
    with node_task_runs_share_flow_context():  # outside a flow run: changes nothing
        assert _tracker.hydrated_context is hydrated_context


def test_quartet_stock_turns_every_lever_off(monkeypatch) -> None:
    """QUARTET_STOCK=1: Prefect's own worker poll and server start-up, prefect-dbt untouched."""
    from core.settings import STOCK_ENV
    from orchestrators.prefect import levers

    for name in (
        "PREFECT_SERVER_REGISTER_BLOCKS_ON_START",
        "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION",
    ):
        monkeypatch.delenv(name, raising=False)
    assert levers.worker_env() == {"PREFECT_WORKER_QUERY_SECONDS": "1"}

    monkeypatch.setenv(STOCK_ENV, "1")
    assert levers.worker_env() == {}
    levers.ephemeral_server_without_block_catalog()
    assert "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION" not in os.environ


#: what the shop project's definitions look like to Prefect, printed by a process of its own
#: (the project is chosen per process: QUARTET_PROJECT)
SHOP_DEFINITIONS = """
import json

from core import lineage
from core.failures import ConfigError
from core.kit import RunRequest
from orchestrators.prefect.deployments import deployments
from orchestrators.prefect.flows import backfill_partitions, ingest_task
from orchestrators.prefect.harness.deploy import deployment_for
from orchestrators.prefect.harness.lineage import declared_graph

try:
    backfill_partitions("2024-01", "2024-02")
    refused = None
except ConfigError as exc:
    refused = str(exc)
print("RESULT " + json.dumps({
    "difference": lineage.canonical().difference(declared_graph()),
    "declared": declared_graph().to_json(),
    "deployments": {f"{d.flow_name}/{d.name}": len(d.triggers) for d in deployments()},
    "assets": [a.key for r in ("customers", "orders") for a in ingest_task(r).assets],
    "backfill": refused,
    "run": deployment_for(RunRequest("prefect")),
}))
"""


def test_a_project_without_partitions_or_probe_is_the_canonical_graph_without_a_watcher(
    quartet_home,
) -> None:
    """The shop's CSV export (examples/shop: raw dataset shop_raw, no partitions, no freshness
    probe, no demo API) under Prefect: its declared lineage is the canonical one (dbt source
    ``ecom`` joined to the raw tables by relation); no watcher, no trigger on new data, no
    backfill, which is refused by name; a run is the full pipeline without partitions."""
    found = in_project(SHOP, SHOP_DEFINITIONS)

    assert found["difference"] == []
    declared = lineage.Graph.from_json(found["declared"])
    assert declared.nodes["shop_raw.orders"] == "raw"
    assert ("shop_raw.orders", "stg_orders") in declared.edges
    assert found["deployments"] == {
        "quartet-pipeline/full": 0,  # on schedule only: nothing says the source published more
        "quartet-ingestion/ingestion": 0,
        "quartet-transformation/transformation": 0,
    }
    assert found["assets"] == [
        "duckdb://prefect/shop_raw/customers",
        "duckdb://prefect/shop_raw/orders",
    ]
    assert "the project shop has no partitions" in found["backfill"]
    assert found["run"] == ["quartet-pipeline/full", {"as_of": None, "partitions": None}]
