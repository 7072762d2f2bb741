"""Airflow fixtures: AIRFLOW_HOME inside the test's QUARTET_HOME, the DagBag, in-process runs.

Airflow reads its configuration on first import, so nothing here imports it at module level.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrators.airflow import PIPELINE_DAG
from orchestrators.airflow.harness import environment


@pytest.fixture(scope="session", autouse=True)
def airflow_environment(quartet_home: Path) -> Path:
    """Airflow's settings for this process, before anything imports Airflow (it reads its
    configuration once, at that first import); they also turn dlt's Airflow secrets provider
    off, which would otherwise import Airflow in the bare run a test compares with."""
    return environment.configure()


@pytest.fixture(scope="session")
def airflow_home(airflow_environment: Path) -> Path:
    """A migrated metadata DB (``airflow db migrate``) with the writer pool."""
    return environment.migrate_dev()


@pytest.fixture(scope="session")
def dag_bag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(environment.DAGS_FOLDER))


@pytest.fixture(scope="session")
def pipeline_dag(dag_bag):
    return dag_bag.get_dag(PIPELINE_DAG)


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch):
    """Point the ``quartet_source_api`` connection at an API (restored after the test)."""
    name = "AIRFLOW_CONN_QUARTET_SOURCE_API"
    monkeypatch.setenv(name, os.environ.get(name, ""))

    def point(url: str, token: str) -> None:
        environment.source_api_connection(url, token)

    return point


@pytest.fixture
def own_api(connect):
    """Start a source API with special settings (faults, malformed data) for one test."""
    from contextlib import ExitStack

    from tests.helpers import own_source_api

    stack = ExitStack()

    def start(**config) -> tuple[str, str]:
        url, token = stack.enter_context(own_source_api(**config))
        connect(url, token)
        return url, token

    yield start
    stack.close()
