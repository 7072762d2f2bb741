"""The DuckDB warehouse file: one writer at a time, read helpers.

DuckDB lets one process open a file read-write. Orchestrators serialize their own writers with
their native mechanism (pools, concurrency limits, ...); :func:`writer_lock` is the last line of
defence underneath all of them: a writer waits for the file, and after ``QUARTET_LOCK_TIMEOUT``
seconds fails with an error that names the file and the process holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

DEFAULT_LOCK_TIMEOUT = 300.0


class WarehouseBusyError(RuntimeError):
    """Another process writes to the warehouse and did not finish within the timeout."""


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
    path: Path, *, timeout: float | None = None, purpose: str = "write"
) -> Iterator[None]:
    """Hold the warehouse for writing: a lock file for Quartet's own runs, then DuckDB's own lock.

    Waits up to ``timeout`` seconds, printing who it waits for, then raises WarehouseBusyError.
    """
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


def table_counts(path: Path, schemas: tuple[str, ...]) -> dict[str, int]:
    """Row count of every table of ``schemas`` (``schema.table`` -> rows); {} if no file yet."""
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
