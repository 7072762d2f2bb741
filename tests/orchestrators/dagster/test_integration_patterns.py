"""The three dlt <-> Dagster integration patterns load the same raw layer as the main path."""

from __future__ import annotations

import pytest

from core import settings
from lab.fingerprint import describe_diffs, diff, fingerprint

JANUARY = "2013-01-31"


@pytest.mark.parametrize(
    "pattern", ["multi_asset_rest_api", "dlt_assets_rest_api", "multi_asset_handwritten"]
)
def test_each_pattern_loads_raw_tables_identical_to_the_main_path(
    dagster_project, bare_january, pattern
):
    import dagster as dg

    from orchestrators.dagster.integration_patterns import (
        PATTERNS,
        pattern_resources,
        pattern_warehouse,
    )

    warehouse = pattern_warehouse(pattern).warehouse
    warehouse.unlink(missing_ok=True)
    result = dg.materialize(
        [PATTERNS[pattern]],
        resources=pattern_resources(),
        run_config={"resources": {"api_clock": {"config": {"as_of": JANUARY}}}},
    )
    assert result.success
    materialized = {event.asset_key.path[-1] for event in result.get_asset_materialization_events()}
    assert materialized == {"flights", "weather", "planes", "airports", "airlines"}

    raw = fingerprint(warehouse)
    assert raw.tables  # something was loaded
    assert all(table.startswith(f"{settings.RAW_SCHEMA}.") for table in raw.tables)
    expected = type(bare_january)(
        path=bare_january.path,
        tables={
            k: v for k, v in bare_january.tables.items() if k.startswith(f"{settings.RAW_SCHEMA}.")
        },
    )
    diffs = diff(expected, raw)
    assert diffs == [], describe_diffs("main path", pattern, diffs)
