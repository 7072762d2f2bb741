"""Runs of the full_pipeline job (in process, on the persistent instance) against the warehouse.

One month (as of 2013-01-31, or two for the backfill) keeps them short; the full year is the
parity suite's.
"""

from __future__ import annotations

import dagster as dg

from core import settings
from core.fingerprint import describe_diffs, diff, fingerprint

JANUARY = "2013-01-31"
FAILING_TEST = "accepted_values_stg_flights_origin__EWR__JFK__LGA"


def _materialized(result) -> set[str]:
    return {
        event.asset_key.to_user_string()
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }


def _assert_same(expected, warehouse) -> None:
    diffs = diff(expected, fingerprint(warehouse))
    assert diffs == [], describe_diffs("bare", "dagster", diffs)


def test_a_full_run_equals_bare_and_a_rerun_changes_nothing(
    dagster_project, instance, bare_january, source_api, fresh_warehouse
):
    commands, _, _ = dagster_project
    warehouse = fresh_warehouse()
    result = commands.execute(as_of=JANUARY)
    assert result.success, commands.failure_summary(result)
    # every raw table and every dbt model materialized, each dbt test evaluated as a check
    assert {"raw/flights", "raw/weather", "staging/stg_flights", "marts/fct_flights"} <= (
        _materialized(result)
    )
    checks = [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert len(checks) == 38 and all(check.passed for check in checks)
    _assert_same(bare_january, warehouse)

    # the token never reaches the event log or the run's config
    run = instance.get_run_by_id(result.run_id)
    logged = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    assert source_api.token not in logged
    assert source_api.token not in str(run.run_config)

    first = fingerprint(warehouse)
    rerun = commands.execute(as_of=JANUARY)
    assert rerun.success, commands.failure_summary(rerun)
    assert diff(first, fingerprint(warehouse)) == []


def test_months_backfilled_in_shuffled_order_equal_bare_in_order(
    dagster_project, bare_in_order, fresh_warehouse
):
    commands, _, _ = dagster_project
    months, as_of = ["2013-01", "2013-02"], "2013-02-28"
    expected = bare_in_order(months, as_of)
    warehouse = fresh_warehouse()
    for month in reversed(months):  # what a multi-run backfill does: one run per month
        result = commands.execute(as_of=as_of, partition=month)
        assert result.success, commands.failure_summary(result)
        assert result.dagster_run.tags["dagster/partition"] == month
    _assert_same(expected, warehouse)


def test_twenty_percent_api_faults_still_give_the_bare_warehouse(
    dagster_project, own_source_api, bare_january, fresh_warehouse
):
    commands, _, _ = dagster_project
    with own_source_api(fault_rate=0.2, fault_seed=7):
        warehouse = fresh_warehouse()
        result = commands.execute(as_of=JANUARY)
    assert result.success, commands.failure_summary(result)
    _assert_same(bare_january, warehouse)


def test_a_failing_dbt_test_fails_the_run_blocks_the_marts_and_alerts(
    dagster_project, own_source_api, alert_receiver, fresh_warehouse
):
    commands, _, _ = dagster_project
    with own_source_api(malformed=("flights:bad_value:2013-01-15",)) as (_url, token):
        fresh_warehouse()
        result = commands.execute(as_of=JANUARY)
    assert not result.success
    failed_checks = [
        event.asset_check_evaluation_data.check_name
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and not event.asset_check_evaluation_data.passed
    ]
    assert failed_checks == [FAILING_TEST]
    materialized = _materialized(result)
    assert "staging/stg_flights" in materialized  # built, then its test failed
    assert "marts/dim_airports" in materialized  # not downstream of stg_flights
    blocked = {"intermediate/int_flights_enriched", "marts/fct_flights", "marts/route_stats"}
    assert not blocked & materialized
    summary = commands.failure_summary(result)
    assert FAILING_TEST in summary and "fct_flights" in summary  # names test and skipped marts

    (payload,) = alert_receiver.wait(1)
    assert payload["orchestrator"] == "dagster"
    assert payload["pipeline"] == "full_pipeline"
    assert payload["run_id"] == result.run_id
    assert payload["status"] == "failed"
    assert FAILING_TEST in payload["error"]
    assert payload["url"].endswith(f"/runs/{result.run_id}")
    assert token not in str(payload) and settings.DEV_API_TOKEN not in str(payload)
