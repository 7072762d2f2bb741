"""Speed levers: every place the Dagster adapter departs from Dagster's stock idiom to go faster.

Each lever is one function here, called in one line by the file it speeds up. QUARTET_STOCK=1
(``core.settings.stock()``) turns all of them off: what is left is the stock idiom, which runs
and passes the same tests, only slower. Each docstring says what the lever does, why, and the
gain measured for it with the command that measured it (ADR 0006 and ADR 0013 record the
decisions; docs/benchmarks.md the current figures). Together, the dev-mode levers took a
full-year ``quartet run dagster``'s CPU beyond bare's from 17.9 to 12.1 s (``/usr/bin/time`` of
``python -m orchestrators.dagster run`` alternating with ``python -m core run``).
``QUARTET_STOCK=1 quartet run dagster`` runs the same pipeline with every lever off.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

from dagster_dbt import DbtCliResource
from dagster_dbt.compat import DBT_PYTHON_VERSION
from packaging.version import Version

from core import settings


def on() -> bool:
    """Whether the levers are on (QUARTET_STOCK unset or 0)."""
    return not settings.stock()


# -- dev-mode runs (run.py) -----------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_without_fsync(home: Path) -> Iterator[None]:
    """While a dev-mode run writes its events: SQLite's WAL without an fsync per event.

    What: a process-wide SQLAlchemy ``connect`` listener sets ``PRAGMA synchronous=NORMAL`` on
    connections to the instance's own files (under ``home``) and keeps one idle connection on
    each, so that Dagster's closes no longer checkpoint the WAL.
    Why: Dagster's SQLite storage opens a connection per event (``NullPool``) with SQLite's
    default ``synchronous=FULL``: every event of a run waits for the disk. WAL + NORMAL is what
    SQLite documents for WAL: a killed process loses nothing; an OS crash or power cut may lose
    the last commits, never corrupt the file.
    Gain: the event log's commits and closes fell from 13.7 to 0.7 s of a full-year run
    (``py-spy record --subprocesses --idle -r 50 --format raw -- .venvs/dagster/bin/python -m
    orchestrators.dagster run``, before and after).
    Stock: Dagster's own settings.
    """
    if not on():
        yield
        return
    import sqlalchemy

    prefixes = (str(home), str(home.resolve()))
    kept: dict[str, sqlite3.Connection] = {}
    lock = threading.Lock()

    def on_connect(dbapi_connection, _record) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        path = dbapi_connection.execute("PRAGMA database_list").fetchone()[2]
        if not path.startswith(prefixes):
            return
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        with lock:
            mode = dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0]
            if path not in kept and mode == "wal":  # a new file becomes WAL after its creation
                keeper = sqlite3.connect(path, check_same_thread=False)
                keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()  # joins the WAL
                kept[path] = keeper

    sqlalchemy.event.listen(sqlalchemy.Engine, "connect", on_connect)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.Engine, "connect", on_connect)
        with lock:
            for keeper in kept.values():
                keeper.close()


def import_definitions_early(load: Callable[[], object]) -> None:
    """Start importing the code location in a thread, while the source API starts.

    What: ``load`` (the import of ``definitions``) runs in a daemon thread; the run waits for it
    through Python's import lock. An error is left for the run's own import to raise.
    Why: Dagster, dagster-dbt with dbt-core and dlt take seconds to import; the source API's
    start-up takes about as long: the two overlap instead of adding up.
    Gain: definitions ready after 7.8 / 11.6 / 11.3 s instead of 9.6 / 14.1 / 22.7 s, the same
    CPU (a script timing ``with kit.source_api(): import orchestrators.dagster.definitions``
    with and without the thread, three alternating pairs on a loaded machine).
    Stock: the import happens when the run needs it.
    """
    if not on():
        return

    def quietly() -> None:
        with contextlib.suppress(Exception):
            load()

    threading.Thread(target=quietly, name="import-definitions", daemon=True).start()


# -- dbt (resources.py, assets.py) ----------------------------------------------------------------


class KnownVersionDbt(DbtCliResource):
    """``DbtCliResource`` that knows its dbt's version instead of asking the executable.

    What: overrides dagster-dbt's private ``_cli_version`` with the version of the dbt-core
    installed beside dagster-dbt (``dbt_executable`` is this environment's ``dbt``).
    Why: before every ``dbt build`` dagster-dbt runs ``dbt --version``: a whole dbt start-up
    and a look-up of dbt's latest release on the network. A private name: if a dagster-dbt
    release renames it, the override goes unused and the subprocess comes back (a test holds
    the version the resource reports).
    Gain: the ``dbt --version`` subprocess, 3.5 s per ``dbt build`` (the py-spy command of
    :func:`sqlite_without_fsync`).
    """

    @cached_property
    def _cli_version(self) -> Version:
        return DBT_PYTHON_VERSION


def dbt_resource_type() -> type[DbtCliResource]:
    """The dbt resource's class: :class:`KnownVersionDbt`, or stock ``DbtCliResource``."""
    return KnownVersionDbt if on() else DbtCliResource


def seed_dbt_parse(target_dir: Path) -> None:
    """Start the dbt op's target dir from the parse core prepared (``partial_parse.msgpack``).

    Why: dbt then parses only what changed instead of the whole project in every build.
    Gain: not measured on its own (it spares the first build in a fresh target dir a full
    parse; later builds find their own partial parse). Stock: dbt parses as it finds the target.
    """
    if on():
        from core import dbt

        dbt.seed_partial_parse(target_dir)


# -- deployed mode (deploy.py; docker/dagster/ carries the same values) ---------------------------


def dequeue_interval_seconds(poll_seconds: float) -> int | None:
    """The queued run coordinator's dequeue interval: every ``poll_seconds`` (at least 1).

    Why: Dagster's default is 5 s, so a submitted run waits up to 5 s to be launched. The
    daemon's dequeue query then runs every second on an idle deployment (one indexed query).
    Gain: with :func:`postgres_session_options`, 16 s less wall and 4.4 s less CPU per full-year
    deployed run (``quartet bench deployed --only dagster --repeat 1``, two alternating pairs);
    this one is ~2 s of a run's wait on average. Stock: None (Dagster's default).
    """
    return max(1, round(poll_seconds)) if on() else None


#: libpq options for Dagster's PostgreSQL sessions (URL-encoded ``-c synchronous_commit=off``)
ASYNC_COMMIT_OPTIONS = "-c%20synchronous_commit%3Doff"


def postgres_session_options() -> str | None:
    """``synchronous_commit=off`` for Dagster's own PostgreSQL sessions (not the warehouse).

    Why: a run stores an event per step, asset partition and check, each its own commit that
    waits for the server's WAL flush. With it off a commit returns before the flush; every
    session still sees it at once. A crash of the PostgreSQL server (not of a Dagster process)
    may lose the last fraction of a second of events, never corrupt them.
    Gain: measured with :func:`dequeue_interval_seconds` (its docstring), most of the 16 s.
    Stock: None (PostgreSQL's default, synchronous commits).
    """
    return ASYNC_COMMIT_OPTIONS if on() else None
