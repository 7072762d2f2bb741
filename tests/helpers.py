"""What every orchestrator's tests share: fresh warehouses, an own source API, same-as-bare checks.

Import from any test environment (core is installed in each orchestrator's venv)::

    from tests.helpers import JANUARY, assert_same_as_bare, fresh_warehouse, own_source_api

Counts come from the canonical graph (dlt schema + dbt manifest), never from literals, so a new
model or test changes what the tests expect without editing them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core import settings

#: the window most tests use: all resources, the API clock at the end of January 2013
JANUARY = "2013-01-31"
JANUARY_PARTITION = "2013-01"


def fresh_warehouse(name: str) -> Path:
    """Remove ``warehouse/<name>.duckdb`` and the dlt working state of ``name``; return the path.

    dlt restores its state from the warehouse, and its working folder may hold a package a
    killed run left: starting over means both go.
    """
    pipeline = settings.for_pipeline(name)
    for path in (
        pipeline.warehouse,
        pipeline.warehouse.with_name(pipeline.warehouse.name + ".wal"),
    ):
        path.unlink(missing_ok=True)
    shutil.rmtree(pipeline.pipelines_dir, ignore_errors=True)
    return pipeline.warehouse


@contextlib.contextmanager
def own_source_api(**config) -> Iterator[tuple[str, str]]:
    """A source API of this test only (faults, malformed data, its own clock): ``(url, token)``.

    SOURCE_API_URL/TOKEN point at it for the duration and are restored afterwards.
    """
    from core.source_service import SourceAPIConfig, running_source_api

    saved = {k: os.environ.pop(k, None) for k in (settings.SOURCE_API_URL_ENV,)}
    try:
        with running_source_api(SourceAPIConfig(**config)) as api:
            yield api
    finally:
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value


def assert_same_as_bare(warehouse: Path | str, bare) -> None:
    """The warehouse's fingerprint equals ``bare`` (a Fingerprint); the message shows the rows."""
    from lab.fingerprint import describe_diffs, diff, fingerprint

    mine = fingerprint(warehouse)
    differences = diff(bare, mine)
    assert not differences, describe_diffs(str(bare.path), str(warehouse), differences)


def table_rows(warehouse: Path | str, sql: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def months_loaded(warehouse: Path | str) -> list[str]:
    """The months (YYYY-MM) that raw.flights holds, in order."""
    rows = table_rows(
        warehouse,
        "select distinct strftime(make_date(year, month, 1), '%Y-%m') from raw.flights order by 1",
    )
    return [r[0] for r in rows]


@dataclass(frozen=True)
class Expected:
    """What one pipeline run consists of, from the canonical graph."""

    resources: tuple[str, ...]
    models: tuple[str, ...]
    tests: int

    @property
    def units(self) -> int:
        return len(self.resources) + len(self.models)


def expected() -> Expected:
    from core import lineage

    graph = lineage.canonical()
    return Expected(
        resources=tuple(n.split(".", 1)[1] for n, layer in graph.nodes.items() if layer == "raw"),
        models=tuple(n for n, layer in graph.nodes.items() if layer != "raw"),
        tests=sum(len(t) for t in graph.tests.values()),
    )


def quartet(
    *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``quartet ARGS`` as a user runs it (its own process), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *args],
        cwd=settings.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


#: the second example (a shop's CSV export, no partitions, no clock, no freshness probe)
SHOP = settings.REPO_ROOT / "examples" / "shop" / "quartet.toml"
#: what a process run by :func:`in_project` prints, before its one JSON value
RESULT = "RESULT "


def in_project(project_file: Path, code: str, *, home: Path | None = None, timeout: float = 600):
    """Run ``code`` in a process of its own for ``project_file`` (its QUARTET_PROJECT, and its
    QUARTET_HOME when ``home`` is given), as a user runs that project: a process serves one
    project, read when its modules load. ``code`` prints ``RESULT <json>``; returns the value."""
    env = {**os.environ, "QUARTET_PROJECT": str(project_file)}
    if home is not None:
        env["QUARTET_HOME"] = str(home)
    env.pop(settings.SOURCE_API_URL_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=settings.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith(RESULT)]
    return json.loads(line.removeprefix(RESULT))


#: how long a stopped UI or run may take to stop everything it started, on a loaded machine
#: (two test lanes on 2 cores): a bound that catches a hang, not a timing claim
STOP_BOUND = 300


# -- exposure: what a running topology shows to other users of the machine and the network ------

LOOPBACK = ("127.", "::1", "::ffff:127.")


def process_tree(*root_pids: int) -> list:
    """``psutil.Process`` of ``root_pids`` and every descendant still alive."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for pid in root_pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                found[proc.pid] = proc
    return list(found.values())


def listening_sockets(*root_pids: int) -> list[tuple[str, int, int, str]]:
    """``(address, port, pid, command)`` of every TCP socket a process of the trees listens on."""
    import psutil

    sockets = []
    for proc in process_tree(*root_pids):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            command = " ".join(proc.cmdline()[:4])
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    sockets.append((conn.laddr.ip, conn.laddr.port, proc.pid, command))
    return sockets


def assert_loopback_only(*root_pids: int) -> list[tuple[str, int, int, str]]:
    """Every socket the trees listen on is bound to loopback; returns them (at least one)."""
    sockets = listening_sockets(*root_pids)
    assert sockets, f"no listening socket under pids {root_pids}: the scan saw nothing to check"
    exposed = [s for s in sockets if not s[0].startswith(LOOPBACK)]
    assert not exposed, "listening beyond loopback: " + "; ".join(
        f"{ip}:{port} (pid {pid}: {cmd})" for ip, port, pid, cmd in exposed
    )
    return sockets


def assert_token_on_no_command_line(token: str, *root_pids: int) -> int:
    """No process of the trees carries ``token`` in its command line (``ps`` shows it to every
    local user); returns how many processes were read."""
    import psutil

    procs = process_tree(*root_pids)
    assert procs, f"no process under pids {root_pids}: nothing to check"
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            assert token not in " ".join(proc.cmdline()), (
                f"the token is on the command line of pid {proc.pid}: {proc.name()}"
            )
    return len(procs)
