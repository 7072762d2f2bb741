"""The definitions load, and declare the contract every adapter meets (ADR 0012) (fast: no run)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import dagster as dg
from dagster._core.definitions.dependency import NodeHandle

from core import settings
from core.ingestion import load_config
from core.lineage import canonical


def test_definitions_load_with_the_pipeline_jobs_schedule_and_sensors(dagster_project):
    _, defs, _ = dagster_project
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "full_pipeline",
        "dlt_ingestion",
        "dbt_transformation",
    }
    schedule = defs.resolve_schedule_def("monthly_full_pipeline")
    assert schedule.cron_schedule == load_config().orchestration.schedule
    assert defs.resolve_sensor_def("source_api_as_of")
    assert defs.resolve_sensor_def("alert_on_run_failure")
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    # one asset per dlt resource (their own op each), one per dbt model
    assert {f"raw/{resource}" for resource in load_config().resources} <= keys
    assert {"staging/stg_flights", "marts/fct_flights", "marts/route_stats"} <= keys


def test_lineage_equals_the_canonical_graph(dagster_project):
    from orchestrators.dagster.lineage import declared_graph

    _, defs, _ = dagster_project
    assert canonical().difference(declared_graph(defs)) == []


def test_partitions_are_the_months_of_2013_and_every_writer_is_in_one_pool(dagster_project):
    _, defs, project = dagster_project
    assert project.MONTHLY.get_partition_keys() == load_config().partitions()
    graph = defs.resolve_asset_graph()
    writers = {graph.get(key).assets_def for key in graph.get_all_asset_keys()}
    assert len(writers) == 1 + len(load_config().resources)  # one op per resource + dbt
    for assets_def in writers:
        assert assets_def.partitions_def == project.MONTHLY
        assert assets_def.node_def.pool == project.WAREHOUSE_POOL
    # the instance allows one op of that pool at a time
    config = (project.dagster_home() / "dagster.yaml").read_text()
    assert f"default_limit: {project.WAREHOUSE_POOL_LIMIT}" in config


def test_ingestion_retries_as_the_policy_says(dagster_project):
    from orchestrators.dagster.automation import INGESTION_RETRY

    _, defs, _ = dagster_project
    policy = load_config().orchestration
    job = defs.resolve_job_def("full_pipeline")
    policies = {
        node.name: job.get_retry_policy_for_handle(NodeHandle(node.name, None))
        for node in job.graph.nodes
    }
    assert policies["ingest_flights"] == INGESTION_RETRY
    assert INGESTION_RETRY.max_retries == policy.unit_retries
    assert INGESTION_RETRY.delay == policy.retry_delay_seconds


def test_the_source_api_token_is_an_env_var_reference(dagster_project):
    _, defs, _ = dagster_project
    source_api = defs.resources["source_api"]
    assert source_api.token == dg.EnvVar(settings.SOURCE_API_TOKEN_ENV)
    assert settings.DEV_API_TOKEN not in repr(source_api)


def test_the_monthly_schedule_runs_the_month_that_ended(dagster_project):
    _, defs, _ = dagster_project
    schedule = defs.resolve_schedule_def("monthly_full_pipeline")
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2013, 3, 1))
    requests = schedule.evaluate_tick(context).run_requests
    assert [request.partition_key for request in requests] == ["2013-02"]


def test_only_transient_ingestion_errors_are_retried():
    import requests

    from core.pipeline import IngestionError
    from orchestrators.dagster.assets import transient

    def failed(status: int) -> IngestionError:
        response = requests.Response()
        response.status_code = status
        try:
            raise requests.HTTPError(response=response)
        except requests.HTTPError as cause:
            try:
                raise IngestionError("ingesting flights failed") from cause
            except IngestionError as exc:
                return exc

    assert transient(failed(503)) and transient(failed(429))
    assert not transient(failed(401))  # a refused token: no retry fixes it
    assert not transient(IngestionError("malformed record"))


def test_a_partition_run_covers_its_months_only(dagster_project):
    """``--partition 2013-02`` loads February alone; a range its months; no partition, one load."""
    from orchestrators.dagster.run import partition_tags

    _, _, project = dagster_project
    windows = []

    @dg.asset(partitions_def=project.MONTHLY)
    def probe(context) -> None:
        windows.append([w.partition for w in project.run_windows(context, ("flights",), None)])

    for months in (["2013-02"], ["2013-02", "2013-04"], []):
        assert dg.materialize([probe], tags=partition_tags(months)).success
    assert windows == [["2013-02"], ["2013-02", "2013-03", "2013-04"], [None]]


def test_the_sensor_asks_for_the_months_the_api_published_data_in(dagster_project):
    from core.source_api import set_clock
    from orchestrators.dagster.automation import source_api_as_of
    from orchestrators.dagster.resources import SourceAPI
    from tests.helpers import own_source_api

    with own_source_api(as_of="2013-01-31") as (url, token):
        resources = {"source_api": SourceAPI(url=url, token=token)}
        first = dg.build_sensor_context(resources=resources)
        # first look: remembers the clock only
        assert not [r for r in source_api_as_of(first) if isinstance(r, dg.RunRequest)]
        assert first.cursor == "2013-01-31"

        again = dg.build_sensor_context(cursor=first.cursor, resources=resources)
        assert not [r for r in source_api_as_of(again) if isinstance(r, dg.RunRequest)]

        set_clock(url, token, "2013-03-15")  # new data arrived
        later = dg.build_sensor_context(cursor=first.cursor, resources=resources)
        requests = [r for r in source_api_as_of(later) if isinstance(r, dg.RunRequest)]
    assert [r.partition_key for r in requests] == ["2013-01", "2013-02", "2013-03"]
    assert all(
        r.run_config == {"resources": {"api_clock": {"config": {"as_of": "2013-03-15"}}}}
        for r in requests
    )
    assert later.cursor == "2013-03-15"


def test_the_dbt_resource_runs_this_environments_dbt_and_knows_its_version(dagster_project):
    """dagster-dbt is not left to ask the executable (``dbt --version``: a dbt start-up, and a
    look-up of dbt's latest release on the network) before every build."""
    from importlib.metadata import version

    from packaging.version import Version

    _, defs, _ = dagster_project
    dbt = defs.resources["dbt"]
    assert Path(dbt.dbt_executable) == Path(sys.executable).parent / "dbt"
    assert dbt._cli_version == Version(version("dbt-core"))
