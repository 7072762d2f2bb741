"""The warehouse: a DuckDB file (one writer at a time) or a PostgreSQL database; read helpers.

A warehouse *location* is either the path of a DuckDB file or a ``postgresql://`` URL
(``settings.PipelineSettings.location``).

DuckDB lets one process open a file read-write. Orchestrators serialize their own writers with
their native mechanism (pools, concurrency limits, ...); :func:`writer_lock` is the last line of
defence underneath all of them: a writer waits for the file, and after ``QUARTET_LOCK_TIMEOUT``
seconds fails with an error that names the file and the process holding it.

PostgreSQL admits many writers (each dlt load is its own transactions, merges included):
:func:`allows_parallel_writers` tells an adapter whether its ingestion units may run at once,
and :func:`writer_lock` is a no-op there. :func:`check_connection` fails early, with the URL
(password masked) and what is wrong, before anything is loaded.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb

from core.failures import WarehouseBusyError, WarehouseConnectionError

DEFAULT_LOCK_TIMEOUT = 300.0
Location = Path | str


def is_postgres(location: Location | None) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(location, str) and location.split("://", 1)[0] in ("postgresql", "postgres")


def mask(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def allows_parallel_writers(location: Location | None = None) -> bool:
    """May several ingestion units write to this warehouse at once? PostgreSQL yes, DuckDB no.

    ``location`` defaults to the configured warehouse (``QUARTET_WAREHOUSE_URL``, else DuckDB).
    """
    if location is None:
        from core import settings

        location = settings.warehouse_url()
    return is_postgres(location)


def loader_file_format(location: Location, configured: str) -> str:
    """dlt's loader file format for this engine: the configured one on DuckDB (parquet), CSV
    (PostgreSQL's COPY) on PostgreSQL, where parquet would need an ADBC driver."""
    return "csv" if is_postgres(location) and configured == "parquet" else configured


#: a DuckDB database file carries these bytes at offset 8 (its header's magic)
DUCKDB_MAGIC = b"DUCK"


def _check_duckdb_file(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
    except FileNotFoundError:
        return  # a first run creates it
    if header and header[8:12] != DUCKDB_MAGIC:
        raise WarehouseConnectionError(
            f"warehouse {path} is not a DuckDB database (another file is in its place): move it "
            "away and run again. Nothing was loaded."
        )


def check_connection(location: Location) -> None:
    """Fail early, before anything is loaded, when the warehouse cannot be used: a PostgreSQL
    server that refuses, or a file in the DuckDB warehouse's place that is not a DuckDB file."""
    if not is_postgres(location):
        _check_duckdb_file(Path(location))
        return
    import psycopg2

    try:
        psycopg2.connect(location, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        text = str(exc).strip()
        if "password authentication failed" in text:
            why = "the password (or user) was rejected"
        elif "does not exist" in text and "database" in text:
            why = "the database does not exist (create it, or use `--warehouse postgres`)"
        elif "Connection refused" in text or "could not connect" in text or "timeout" in text:
            why = "the server is unreachable (is it running? `quartet postgres up`)"
        else:
            why = "the connection failed"
        raise WarehouseConnectionError(
            f"warehouse {mask(location)}: {why}: {' '.join(text.split()) or repr(exc)}. "
            "Nothing was loaded."
        ) from None


def lock_timeout() -> float:
    return float(os.environ.get("QUARTET_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))


def _holder(lock_file: Path) -> str:
    with contextlib.suppress(OSError):
        text = lock_file.read_text().strip()
        if text:
            return text
    return "another process"


def _duckdb_holder(path: Path) -> str | None:
    """None when DuckDB can open the file for writing; else who holds it (from DuckDB's error)."""
    if not path.exists():
        return None
    try:
        duckdb.connect(str(path)).close()
        return None
    except duckdb.IOException as exc:
        message = str(exc)
        if "lock" not in message.lower():
            raise
        pid = re.search(r"PID (\d+)", message)
        return f"PID {pid.group(1)}" if pid else "another process"


@contextlib.contextmanager
def writer_lock(
    path: Location, *, timeout: float | None = None, purpose: str = "write"
) -> Iterator[None]:
    """Hold the warehouse for writing: a lock file for Quartet's own runs, then DuckDB's own lock.

    Waits up to ``timeout`` seconds, printing who it waits for, then raises WarehouseBusyError.
    A PostgreSQL warehouse (a URL) needs no lock: this yields at once.
    """
    if is_postgres(path):
        yield
        return
    path = Path(path)
    timeout = lock_timeout() if timeout is None else timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + timeout
    announced = False
    with open(lock_file, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                holder = _duckdb_holder(path)
                if holder is None:
                    break
                fcntl.flock(handle, fcntl.LOCK_UN)
            except BlockingIOError:
                holder = _holder(lock_file)
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"warehouse {path} is busy: {holder} is writing to it; waited {timeout:.0f}s "
                    f"(set QUARTET_LOCK_TIMEOUT to wait longer). Nothing was written."
                )
            if not announced:
                print(f"waiting for warehouse {path} ({holder} is writing to it)", flush=True)
                announced = True
            time.sleep(0.2)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"PID {os.getpid()} ({purpose})")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postgres_counts(url: str, schemas: tuple[str, ...]) -> dict[str, int]:
    import psycopg2
    from psycopg2 import sql

    con = psycopg2.connect(url, connect_timeout=10)
    try:
        with con.cursor() as cur:
            cur.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema = any(%s) order by 1, 2",
                (list(schemas),),
            )
            counts = {}
            for schema, table in cur.fetchall():
                cur.execute(
                    sql.SQL("select count(*) from {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                )
                counts[f"{schema}.{table}"] = cur.fetchone()[0]
            return counts
    finally:
        con.close()


def table_counts(path: Location, schemas: tuple[str, ...]) -> dict[str, int]:
    """Row count of every table of ``schemas`` (``schema.table`` -> rows); {} if no file yet."""
    if is_postgres(path):
        return _postgres_counts(path, schemas)
    path = Path(path)
    if not path.exists():
        return {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in ({', '.join('?' for _ in schemas)}) order by 1, 2",
            list(schemas),
        ).fetchall()
        return {
            f"{schema}.{table}": con.execute(
                f'select count(*) from "{schema}"."{table}"'
            ).fetchone()[0]
            for schema, table in names
        }
    finally:
        con.close()


def loaded_watermark(location: Location) -> str | None:
    """The newest ``updated_at`` of the raw layer (UTC, ``YYYY-MM-DDTHH:MM:SS``), None before the
    first load: what a source watcher compares with the API's published as-of."""
    from core import settings

    if is_postgres(location):
        import psycopg2

        con = psycopg2.connect(location, connect_timeout=10)
    elif Path(location).exists():
        con = duckdb.connect(str(location), read_only=True)
    else:
        return None
    try:
        # the same SQL for both engines (no parameters: their placeholders differ)
        cur = con.cursor()
        cur.execute(
            "select table_name from information_schema.tables "
            f"where table_schema = '{settings.RAW_SCHEMA}' "
            "and table_name not like '\\_dlt%' escape '\\'"
        )
        marks = []
        for (table,) in cur.fetchall():
            cur.execute(f'select max(updated_at) from {settings.RAW_SCHEMA}."{table}"')
            marks.append(cur.fetchone()[0])
    finally:
        con.close()
    marks = [m.astimezone(datetime.UTC) if m.tzinfo else m for m in marks if m is not None]
    return max(marks).strftime("%Y-%m-%dT%H:%M:%S") if marks else None
