"""Fixtures of the Dagster adapter's tests: the definitions, runs on a persistent instance.

Everything lives in the session's QUARTET_HOME (tests/conftest.py): the warehouse
``warehouse/dagster.duckdb`` and DAGSTER_HOME ``.quartet/dagster/home``. The definitions are
imported only after that home is set, because they derive their paths from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import settings


@pytest.fixture(scope="session")
def dagster_project(quartet_home: Path):
    """The adapter's modules, imported inside the test home."""
    from orchestrators.dagster import commands, definitions, project

    project.use_dagster_home()
    return commands, definitions.defs, project


@pytest.fixture(scope="session")
def instance(dagster_project):
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        yield instance


def _fresh_warehouse() -> Path:
    warehouse = settings.for_pipeline("dagster").warehouse
    for path in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
        path.unlink(missing_ok=True)
    return warehouse


@pytest.fixture
def fresh_warehouse(dagster_project):
    """Delete the Dagster warehouse (dlt restores its state from it, so that is all there is)."""
    return _fresh_warehouse


@pytest.fixture(scope="session")
def bare_in_order(source_api):
    """Fingerprint of a bare run of ``months`` in order (its own warehouse ``bare_months``)."""
    from core import pipeline
    from core.fingerprint import fingerprint

    def run(months: list[str], as_of: str):
        pipeline.run("bare_months", as_of=as_of, partitions=months, log=lambda _: None)
        return fingerprint(settings.for_pipeline("bare_months").warehouse)

    return run


@pytest.fixture
def own_source_api(monkeypatch: pytest.MonkeyPatch):
    """Start a source API of this test only (faults, malformed data, its own clock)."""
    from core.source_api import SourceAPIConfig, running_source_api

    @contextlib.contextmanager
    def start(**config) -> Iterator[tuple[str, str]]:
        monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)
        with running_source_api(SourceAPIConfig(**config)) as api:
            yield api

    return start


def events_text(instance, run_id: str) -> str:
    return "\n".join(
        f"{entry.user_message} {entry.dagster_event.event_specific_data if entry.dagster_event else ''}"
        for entry in instance.all_logs(run_id)
    )
