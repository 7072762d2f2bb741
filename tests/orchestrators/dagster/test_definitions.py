"""The definitions load, and declare the contract every adapter meets (ADR 0012) (fast: no run)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from core import settings
from core.failures import ConfigError
from core.ingestion import load_config
from core.lineage import canonical
from core.project import Partitions
from tests.failure_cases import CASES
from tests.helpers import SHOP, in_project


def test_definitions_load_with_the_pipeline_jobs_schedule_and_sensors(dagster_project):
    _, defs, _ = dagster_project
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "full_pipeline",
        "dlt_ingestion",
        "dbt_transformation",
    }
    schedule = defs.resolve_schedule_def("monthly_full_pipeline")
    assert schedule.cron_schedule == load_config().orchestration.schedule
    assert defs.resolve_sensor_def("source_freshness")
    assert defs.resolve_sensor_def("alert_on_run_failure")
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    # one asset per dlt resource (their own op each), one per dbt model
    assert {f"raw/{resource}" for resource in load_config().resources} <= keys
    assert {"staging/stg_flights", "marts/fct_flights", "marts/route_stats"} <= keys


def test_lineage_equals_the_canonical_graph(dagster_project):
    from orchestrators.dagster.harness.lineage import declared_graph

    _, defs, _ = dagster_project
    assert canonical().difference(declared_graph(defs)) == []


#: what a code location loaded in a subprocess declares, as JSON (its project is the env's)
DECLARED = """
import json
import dagster as dg
from orchestrators.dagster.assets import dbt_models, ingestion_assets
from orchestrators.dagster.definitions import defs
from orchestrators.dagster.harness.run import partition_tags

graph = defs.resolve_asset_graph()
keys = graph.get_all_asset_keys()
print("RESULT " + json.dumps({
    "partitioned": sorted(k.to_user_string() for k in keys if graph.get(k).partitions_def),
    "external": sorted(k.to_user_string() for k in keys if not graph.get(k).is_materializable),
    "dlt": sorted(k.to_user_string() for a in ingestion_assets for k in a.keys),
    "dbt_upstream": sorted(
        k.to_user_string()
        for k in {dep.asset_key for spec in dbt_models.specs for dep in spec.deps}
        - set(dbt_models.keys)
    ),
    "sensors": sorted(s.name for s in defs.sensors),
    "schedules": {s.name: s.cron_schedule for s in defs.schedules},
    "partition_tags": partition_tags(),
}))
"""


def test_a_project_without_partitions_or_probe_loads_unpartitioned_and_joined(quartet_home):
    """The shop: no partitions, no freshness probe, dbt sources named ``ecom`` in ``shop_raw``.

    Its assets have no partitions definition, the dbt sources are the dlt assets themselves
    (joined by relation, no stand-in assets), and no freshness sensor is defined (the failure
    alert is, for any project). A subprocess: the project is read when the definitions load.
    """
    declared = in_project(SHOP, DECLARED)
    tables = ["customers", "order_items", "orders", "products", "stores"]
    assert declared["dlt"] == [f"shop_raw/{table}" for table in tables]
    assert declared["partitioned"] == []
    assert declared["dbt_upstream"] == declared["dlt"]
    assert declared["external"] == []
    assert declared["sensors"] == ["alert_on_run_failure"]
    assert declared["schedules"] == {"full_pipeline_schedule": load_config().orchestration.schedule}
    assert declared["partition_tags"] == {}  # a run of the whole project, no range


def test_partitions_are_the_months_of_2013_and_every_writer_is_in_one_pool(dagster_project):
    from orchestrators.dagster.partitions import PARTITIONS

    run, defs, project = dagster_project
    assert isinstance(PARTITIONS, dg.MonthlyPartitionsDefinition)
    assert PARTITIONS.get_partition_keys() == load_config().partitions()
    graph = defs.resolve_asset_graph()
    writers = {graph.get(key).assets_def for key in graph.get_all_asset_keys()}
    assert len(writers) == 1 + len(load_config().resources)  # one op per resource + dbt
    for assets_def in writers:
        assert assets_def.partitions_def == PARTITIONS
        assert assets_def.node_def.pool == project.WAREHOUSE_POOL
    # the instance allows one op of that pool at a time
    config = (run.dagster_home() / "dagster.yaml").read_text()
    assert f"default_limit: {project.WAREHOUSE_POOL_LIMIT}" in config


@pytest.mark.parametrize(
    ("partitions", "kind"),
    [
        (Partitions("monthly", "2013-11", "2014-02"), dg.MonthlyPartitionsDefinition),
        (Partitions("daily", "2013-01-30", "2013-02-02"), dg.DailyPartitionsDefinition),
        (Partitions("none"), type(None)),
    ],
    ids=["monthly", "daily", "none"],
)
def test_each_scheme_is_dagsters_partitions_with_quartets_keys(dagster_project, partitions, kind):
    from orchestrators.dagster.partitions import partitions_def

    dagster_partitions = partitions_def(partitions)
    assert isinstance(dagster_partitions, kind)
    if dagster_partitions is not None:
        assert dagster_partitions.get_partition_keys() == partitions.keys()


@pytest.mark.parametrize(("case", "make", "retry"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_is_retried_as_core_says(case, make, retry):
    """The op's real mapping: ``Failure(allow_retries=False)`` exactly when no retry helps."""
    from orchestrators.dagster.policy import retry_or_fail

    answer = retry_or_fail(make(), 0, load_config().orchestration)
    if retry:
        assert isinstance(answer, dg.RetryRequested), case
    else:
        assert isinstance(answer, dg.Failure) and not answer.allow_retries, case


def test_an_op_waits_what_the_policy_says_and_fails_with_its_error_once_retries_are_spent():
    from orchestrators.dagster.policy import retry_or_fail

    policy = dataclasses.replace(
        load_config().orchestration,
        unit_retries=3,
        retry_delay_seconds=2,
        retry_backoff=3.0,
        max_retry_delay_seconds=10,
    )
    busy = TimeoutError("warehouse busy")
    answers = [retry_or_fail(busy, attempt, policy) for attempt in range(4)]
    assert [a.seconds_to_wait for a in answers[:3]] == [2, 6, 10]  # backoff 3, capped at 10
    assert {a.max_retries for a in answers[:3]} == {3}
    assert answers[3] is busy  # retries spent: the step fails with the error itself


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schedule", "0 6 * * 1"),
        ("source_poll_seconds", 0.5),
        ("follow_poll_seconds", 1.5),
        ("healthy_timeout_seconds", 0.5),
    ],
)
def test_a_policy_dagster_cannot_follow_is_refused_by_name(field, value):
    from orchestrators.dagster.policy import honoured

    policy = load_config().orchestration
    assert honoured(policy, "monthly") == policy
    with pytest.raises(ConfigError, match=rf"^dagster cannot honour \[orchestration\] {field} = "):
        honoured(dataclasses.replace(policy, **{field: value}), "monthly")


def test_the_schedule_takes_the_cron_its_partitions_allow():
    """Monthly and daily schedules are built from the partitioned job (the cron only places the
    tick in the partition); without partitions the cron is taken as it is."""
    from orchestrators.dagster.policy import honoured, schedule_offset

    policy = load_config().orchestration
    daily = dataclasses.replace(policy, schedule="30 2 * * *")
    weekly = dataclasses.replace(policy, schedule="0 6 * * 1")
    assert schedule_offset(daily, "daily") == {"minute_of_hour": 30, "hour_of_day": 2}
    assert schedule_offset(weekly, "none") == {}
    assert honoured(weekly, "none") == weekly
    with pytest.raises(ConfigError, match="built from the daily partitioned job"):
        honoured(policy, "daily")  # the 1st of every month would skip the other days


def test_quartet_run_exits_2_naming_a_refused_field(quartet_home, tmp_path):
    """Loading the definitions refuses the policy: one message, exit 2, before any run."""
    toml = settings.INGESTION_CONFIG.read_text().replace(
        'schedule = "0 0 1 * *"', 'schedule = "0 6 * * 1"'
    )
    assert 'schedule = "0 6 * * 1"' in toml
    config = tmp_path / "ingestion.toml"
    config.write_text(toml)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrators.dagster", "run", "--as-of", "2013-01-31"],
        env={**os.environ, "QUARTET_INGESTION_CONFIG": str(config)},
        cwd=settings.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "quartet run dagster: dagster cannot honour [orchestration] schedule = '0 6 * * 1': "
        "the schedule is built from the monthly partitioned job, so it runs once a month at a "
        "fixed minute, hour and day (e.g. '0 0 1 * *')"
    ]


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


def test_a_partition_run_covers_its_months_only(dagster_project):
    """``--partition 2013-02`` loads February alone; a range its months; no partition, one load."""
    from orchestrators.dagster.harness.run import partition_tags
    from orchestrators.dagster.partitions import PARTITIONS, run_windows

    windows = []

    @dg.asset(partitions_def=PARTITIONS)
    def probe(context) -> None:
        windows.append([w.partition for w in run_windows(context, ("flights",), None)])

    for months in (["2013-02"], ["2013-02", "2013-04"], []):
        assert dg.materialize([probe], tags=partition_tags(months)).success
    assert windows == [["2013-02"], ["2013-02", "2013-03", "2013-04"], [None]]


def test_the_sensor_asks_for_the_months_the_api_published_data_in(dagster_project):
    from core.source_service import set_clock
    from orchestrators.dagster.automation import source_freshness
    from orchestrators.dagster.resources import SourceAPI
    from tests.helpers import own_source_api

    with own_source_api(as_of="2013-01-31") as (url, token):
        resources = {"source_api": SourceAPI(url=url, token=token)}
        first = dg.build_sensor_context(resources=resources)
        # first look: remembers the clock only
        assert not [r for r in source_freshness(first) if isinstance(r, dg.RunRequest)]
        assert first.cursor == "2013-01-31"

        again = dg.build_sensor_context(cursor=first.cursor, resources=resources)
        assert not [r for r in source_freshness(again) if isinstance(r, dg.RunRequest)]

        set_clock(url, token, "2013-03-15")  # new data arrived
        later = dg.build_sensor_context(cursor=first.cursor, resources=resources)
        requests = [r for r in source_freshness(later) if isinstance(r, dg.RunRequest)]
    assert [r.partition_key for r in requests] == ["2013-01", "2013-02", "2013-03"]
    assert all(
        r.run_config == {"resources": {"api_clock": {"config": {"as_of": "2013-03-15"}}}}
        for r in requests
    )
    assert later.cursor == "2013-03-15"


def test_the_dbt_resource_runs_this_environments_dbt_and_knows_its_version(dagster_project):
    """With the levers on, dagster-dbt is not left to ask the executable (``dbt --version``: a
    dbt start-up, and a look-up of dbt's latest release on the network) before every build."""
    from importlib.metadata import version

    from packaging.version import Version

    from orchestrators.dagster import levers

    _, defs, project = dagster_project
    dbt = defs.resources["dbt"]
    assert Path(dbt.dbt_executable) == Path(sys.executable).parent / "dbt"
    assert Path(dbt.project_dir) == project.DBT_PROJECT.project_dir == settings.TRANSFORM_DIR
    if levers.on():
        assert isinstance(dbt, levers.KnownVersionDbt)
        # the private name the lever overrides still exists and answers the installed dbt-core
        assert dbt._cli_version == Version(version("dbt-core"))


def test_quartet_stock_turns_every_lever_off(monkeypatch, tmp_path):
    """QUARTET_STOCK=1 leaves Dagster's stock idiom: stock resources, Dagster's own defaults."""
    from dagster_dbt import DbtCliResource

    from orchestrators.dagster import levers
    from orchestrators.dagster.harness import deploy

    monkeypatch.setenv(settings.STOCK_ENV, "1")
    assert not levers.on()
    assert levers.dbt_resource_type() is DbtCliResource
    assert levers.dequeue_interval_seconds(1) is None
    assert "dequeue_interval_seconds" not in deploy.instance_yaml()
    assert deploy.sqlalchemy_url("postgresql://u@h/d") == "postgresql+psycopg2://u@h/d"
    seeded = tmp_path / "target"
    levers.seed_dbt_parse(seeded)
    assert not seeded.exists()
    calls = []
    levers.import_definitions_early(lambda: calls.append("imported"))
    assert calls == []
    monkeypatch.setenv(settings.STOCK_ENV, "0")
    assert levers.dbt_resource_type() is levers.KnownVersionDbt
    assert "dequeue_interval_seconds: 1" in deploy.instance_yaml()
