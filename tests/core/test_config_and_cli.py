"""The ingestion config, the settings paths, the CLI's compare and lineage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import duckdb
import pytest

from core import lineage, settings
from core.ingestion import ConfigError, load_config, window


def test_one_setting_drives_the_warehouse_path_for_dlt_and_dbt(quartet_home, monkeypatch):
    monkeypatch.delenv(settings.WAREHOUSE_ENV, raising=False)
    pipeline = settings.for_pipeline("prefect")
    assert pipeline.warehouse == quartet_home / "warehouse" / "prefect.duckdb"
    assert pipeline.warehouse.is_absolute()
    # what profiles.yml reads, given to dbt where it runs
    assert pipeline.dbt_env()[settings.WAREHOUSE_ENV] == str(pipeline.warehouse)
    assert "env_var('QUARTET_WAREHOUSE')" in (settings.TRANSFORM_DIR / "profiles.yml").read_text()
    assert pipeline.pipelines_dir.is_relative_to(settings.state_dir())


def test_config_gives_the_twelve_months_of_2013():
    config = load_config()
    assert config.partitions() == [f"2013-{m:02d}" for m in range(1, 13)]
    assert set(config.resources) == {"flights", "weather", "planes", "airports", "airlines"}


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"partition": "2013-13"}, "YYYY-MM"),
        ({"partition": "2014-01"}, "outside the configured range"),
        ({"as_of": "31/01/2013"}, "--as-of must be a date"),
        ({"as_of": "2099-01-01"}, r"outside the source's range 2013-01-01\.\.2013-12-31"),
        ({"as_of": "2012-12-31"}, r"outside the source's range 2013-01-01\.\.2013-12-31"),
        ({"resources": ("passengers",)}, "not declared"),
    ],
)
def test_bad_flags_are_named(flags, needle):
    with pytest.raises(ConfigError, match=needle):
        window(load_config(), **flags)


def test_the_clock_spans_the_range_and_its_replicated_years():
    config = load_config()
    assert config.clock_range() == ("2013-01-01", "2013-12-31")
    assert replace(config, scale=3).clock_range() == ("2013-01-01", "2015-12-31")
    assert window(config, as_of="2013-12-31").as_of == "2013-12-31"


def test_a_file_that_is_not_duckdb_gets_one_message():
    result = subprocess.run(
        [sys.executable, "-m", "lab.cli", "fingerprint", "README.md"],
        capture_output=True,
        text=True,
        cwd=settings.REPO_ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "quartet fingerprint: README.md is not a DuckDB database: give a "
        "warehouse/<name>.duckdb file a run wrote, or a postgresql:// URL"
    ]


def test_bad_config_file_is_named(tmp_path):
    broken = tmp_path / "ingestion.toml"
    broken.write_text(
        settings.INGESTION_CONFIG.read_text().replace("page_size = 10000", 'page_size = "big"')
    )
    with pytest.raises(ConfigError, match=r"page_size must be int.*'big'") as err:
        load_config(broken)
    assert str(broken) in str(err.value)
    broken.write_text(
        settings.INGESTION_CONFIG.read_text().replace(
            'duckdb_memory_limit = "500MB"', 'duckdb_memory_limit = "plenty"'
        )
    )
    with pytest.raises(ConfigError, match=r"duckdb_memory_limit must be a size.*'plenty'"):
        load_config(broken)
    broken.write_text("[source\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_a_missing_orchestrator_environment_is_named_with_its_fix(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lab.cli", "run", "dagster"],
        capture_output=True,
        text=True,
        cwd=settings.REPO_ROOT,
        env={**os.environ, "QUARTET_VENVS": str(tmp_path / "none")},
    )
    assert result.returncode == 2
    assert "dagster environment is missing" in result.stderr
    assert "make env-dagster" in result.stderr


def test_canonical_lineage_joins_dlt_tables_to_dbt_models(quartet_home):
    graph = lineage.canonical()
    raw = {n for n, layer in graph.nodes.items() if layer == "raw"}
    assert raw == {f"raw.{r}" for r in ("flights", "weather", "planes", "airports", "airlines")}
    assert ("raw.flights", "stg_flights") in graph.edges
    assert ("stg_weather", "int_flights_enriched") in graph.edges
    assert ("fct_flights", "carrier_month_performance") in graph.edges
    assert graph.nodes["fct_flights"] == "marts" and graph.nodes["stg_flights"] == "staging"
    assert "unique_fct_flights_flight_id" in graph.tests["fct_flights"]
    assert "on_time_share_counts_only_arrived_flights" in graph.tests["carrier_month_performance"]
    # every model is reachable from a raw table
    reached, frontier = set(raw), set(raw)
    while frontier:
        frontier = {b for a, b in graph.edges if a in frontier} - reached
        reached |= frontier
    assert reached == set(graph.nodes)
    again = lineage.Graph.from_json(json.loads(json.dumps(graph.to_json())))
    assert graph.difference(again) == []
    again.edges.discard(("raw.flights", "stg_flights"))
    assert graph.difference(again) == ["missing edge ('raw.flights', 'stg_flights')"]


def test_compare_names_the_table_and_row_that_differ(bare_january, quartet_home):
    warehouses = settings.warehouse_dir()
    altered = warehouses / "altered.duckdb"
    shutil.copy(warehouses / "bare.duckdb", altered)
    try:
        con = duckdb.connect(str(altered))
        flight = con.execute(
            "select flight_id from marts.fct_flights order by flight_id limit 1"
        ).fetchone()[0]
        con.execute(
            "update marts.fct_flights set dep_delay = dep_delay + 7 where flight_id = ?", [flight]
        )
        con.close()
        result = subprocess.run(
            [sys.executable, "-m", "lab.cli", "compare"],
            capture_output=True,
            text=True,
            cwd=settings.REPO_ROOT,
        )
        assert result.returncode == 1
        assert "marts.fct_flights" in result.stdout and "✗" in result.stdout
        assert f"flight_id='{flight}': dep_delay:" in result.stdout
        assert "NOT identical" in result.stdout
        report = json.loads(
            subprocess.run(
                [sys.executable, "-m", "lab.cli", "compare", "--json"],
                capture_output=True, text=True, cwd=settings.REPO_ROOT,
            ).stdout
        )  # fmt: skip
        differing = [d["table"] for d in report["differences"]["altered"]]
        assert differing == ["marts.fct_flights"]
    finally:
        altered.unlink()


def test_the_pause_point_is_inert_unless_asked_for_and_names_a_bad_value(monkeypatch):
    """The reliability matrix's kill point inside dlt's steps: no collector in any other run."""
    from core.pipeline import PAUSE_ENV, PausePoint, pause_point

    monkeypatch.delenv(PAUSE_ENV, raising=False)
    assert pause_point(["flights", "weather"]) is None
    monkeypatch.setenv(PAUSE_ENV, "flights:load")
    assert isinstance(pause_point(["flights"]), PausePoint)
    assert pause_point(["weather"]) is None  # a unit without flights is never paused
    monkeypatch.setenv(PAUSE_ENV, "flights:transform")
    with pytest.raises(ValueError, match=PAUSE_ENV):
        pause_point(["flights"])


def test_units_loading_at_once_share_one_dlt_environment():
    """Units on threads of one process (PostgreSQL) share os.environ: each must set the same
    dlt settings, or one unit's normalize reads another's workers mid-run."""
    config = load_config()
    by_unit = {r: config.runtime_env((r,), concurrent_units=True) for r in config.resources}
    assert len({tuple(sorted(env.items())) for env in by_unit.values()}) == 1
    alone = config.runtime_env(("flights",))
    assert alone["NORMALIZE__WORKERS"] == str(config.normalize_workers)  # one unit: its pool


def test_settings_are_values_until_dbt_runs(monkeypatch):
    """for_pipeline() changes no environment; dbt_env() says what dbt will read."""
    before = dict(os.environ)
    pipeline = settings.for_pipeline("bare")
    assert dict(os.environ) == before
    env = pipeline.dbt_env()
    assert env[settings.WAREHOUSE_ENV] == str(pipeline.warehouse)
    assert env[settings.DBT_TARGET_ENV] == "duckdb"
    monkeypatch.setenv(settings.WAREHOUSE_URL_ENV, "postgresql://u:p%40ss@127.0.0.1:5433/w")
    pg = settings.for_pipeline("bare").dbt_env()
    assert pg["QUARTET_PG_PASSWORD"] == "p@ss" and pg["QUARTET_PG_DBNAME"] == "w"
