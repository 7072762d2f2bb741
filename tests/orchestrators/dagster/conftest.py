"""Fixtures of the Dagster adapter's tests: the definitions, runs on a persistent instance.

Everything lives in the session's QUARTET_HOME (tests/conftest.py): the warehouse
``warehouse/dagster.duckdb`` and DAGSTER_HOME ``.quartet/dagster/home``. The definitions are
imported only after that home is set, because they derive their paths from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dagster_project(quartet_home: Path):
    """The adapter's modules, imported inside the test home."""
    from orchestrators.dagster import definitions, project
    from orchestrators.dagster.harness import run

    run.use_dagster_home()
    return run, definitions.defs, project


@pytest.fixture(scope="session")
def instance(dagster_project):
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture(scope="session")
def bare_in_order(source_api):
    """Fingerprint of a bare run of ``months`` in order (its own warehouse ``bare_months``)."""
    from lab.fingerprint import fingerprint
    from tests.conftest import bare_run

    def run(months: list[str], as_of: str):
        return fingerprint(bare_run("bare_months", as_of=as_of, partitions=months))

    return run
