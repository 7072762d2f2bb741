"""Fixtures of the Prefect adapter's tests.

Prefect reads PREFECT_HOME when it is imported: it points at a temporary folder before any test
module imports Prefect, so tests never touch ~/.prefect or the repository's .quartet/.

Every process these tests start inherits a session marker in its environment; at the end of the
session no Prefect server carrying it may still run (each one is stopped by the fixture that
started it: a server left behind is reported, then stopped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="quartet-prefect-home-")
SESSION_MARKER = "QUARTET_PREFECT_TEST_SESSION"
os.environ[SESSION_MARKER] = uuid.uuid4().hex
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from orchestrators.prefect import NAME  # noqa: E402
from tests.helpers import fresh_warehouse as _fresh_warehouse  # noqa: E402


def session_processes(*words: str) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes this session started whose command line
    holds every one of ``words``."""
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in environ.split(b"\0") and all(w in cmdline for w in words):
            found.append((int(proc.name), cmdline.strip()))
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    left = session_processes("prefect", "server")
    # ours (the marker says so): stop them, and a run a timed-out test left, then fail the session
    for pid, _cmd in [*left, *session_processes("orchestrators.prefect")]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
    if left:
        print(f"\nFAILED: Prefect servers started by this session were still running: {left}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def prefect_api(source_api) -> Iterator[None]:
    """A Prefect API for the session (prefect_test_harness: a server process on a temp SQLite),
    with the Secret block and the warehouse's concurrency limit provisioned."""
    from prefect.testing.utilities import prefect_test_harness

    from orchestrators.prefect.deployments import provision

    # the first start in a fresh environment creates the database and compiles bytecode
    with prefect_test_harness(server_startup_timeout=180):
        provision(source_api.token)
        yield


@pytest.fixture(scope="session")
def reset_warehouse(quartet_home: Path):
    """Call it to start the prefect warehouse from nothing; returns its path."""
    return lambda: _fresh_warehouse(NAME)


@pytest.fixture
def fresh_warehouse(reset_warehouse) -> Path:
    return reset_warehouse()
