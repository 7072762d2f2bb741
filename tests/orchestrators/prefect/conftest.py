"""Fixtures of the Prefect adapter's tests.

Prefect reads PREFECT_HOME when it is imported: it points at a temporary folder before any test
module imports Prefect, so tests never touch ~/.prefect or the repository's .quartet/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="quartet-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from core import settings  # noqa: E402
from orchestrators.prefect import NAME  # noqa: E402


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api(source_api) -> Iterator[None]:
    """A Prefect API for the session (prefect_test_harness: a server process on a temp SQLite),
    with the Secret block and the warehouse's concurrency limit provisioned."""
    from prefect.testing.utilities import prefect_test_harness

    from orchestrators.prefect.deployments import provision

    # first start in a fresh environment creates the database and compiles bytecode (TRAPS.md)
    with prefect_test_harness(server_startup_timeout=180):
        provision(source_api.token)
        yield


def _reset_warehouse() -> Path:
    """Forget everything the prefect pipeline loaded: warehouse file and dlt working state."""
    pipeline = settings.for_pipeline(NAME)
    for path in pipeline.warehouse.parent.glob(f"{pipeline.warehouse.name}*"):
        path.unlink()
    shutil.rmtree(pipeline.pipelines_dir, ignore_errors=True)
    return pipeline.warehouse


@pytest.fixture(scope="session")
def reset_warehouse(quartet_home: Path):
    """Call it to start the prefect warehouse from nothing; returns its path."""
    return _reset_warehouse


@pytest.fixture
def fresh_warehouse(reset_warehouse) -> Path:
    return reset_warehouse()
