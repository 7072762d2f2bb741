"""Fixtures shared by every test environment (core is installed in each orchestrator's venv).

Tests never touch the user's warehouse/ or .quartet/: the session runs with QUARTET_HOME in a
temporary folder, one source API for the session, and (on demand) a bare run to compare with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import settings
from tests.helpers import JANUARY, table_rows


@dataclass(frozen=True)
class API:
    url: str
    token: str


@pytest.fixture(scope="session")
def quartet_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("quartet-home")
    previous = os.environ.get("QUARTET_HOME")
    os.environ["QUARTET_HOME"] = str(home)
    os.environ.setdefault("QUARTET_LOCK_TIMEOUT", "60")
    yield home
    if previous is None:
        os.environ.pop("QUARTET_HOME", None)
    else:
        os.environ["QUARTET_HOME"] = previous


@pytest.fixture(scope="session")
def source_api(quartet_home: Path) -> Iterator[API]:
    """One locally started source API (a child process on a free loopback port) per session."""
    from core.source_service import running_source_api

    os.environ.pop(settings.SOURCE_API_URL_ENV, None)
    with running_source_api() as (url, token):
        yield API(url, token)


def bare_run(name: str, *, as_of: str | None = None, partitions=None) -> Path:
    """A bare run into warehouse/<name>.duckdb of the test home; returns the warehouse path."""
    from core import pipeline

    pipeline.run(name, as_of=as_of, partitions=partitions, log=lambda _: None)
    return settings.for_pipeline(name).warehouse


@pytest.fixture(scope="session")
def bare_january(source_api: API):
    """Fingerprint of the bare run as of 2013-01-31: what every orchestrator must reproduce.

    It runs into the session home's bare warehouse, which other tests copy; a test that runs bare
    as of a later date must do so in a home of its own, or this would silently become that
    later warehouse (the pipeline is incremental: January again leaves later months in place).
    """
    from lab.fingerprint import fingerprint

    warehouse = bare_run("bare", as_of=JANUARY)
    ((later,),) = table_rows(
        warehouse, f"select count(*) from marts.fct_flights where flight_date > '{JANUARY}'"
    )
    assert later == 0, (
        f"{warehouse} holds {later:,} flights after {JANUARY}: a test ran bare past January in "
        "the session home (give it a QUARTET_HOME of its own)"
    )
    return fingerprint(warehouse)


class AlertReceiver:
    """A local webhook that records every JSON POST (the ALERT_WEBHOOK_URL of alert tests)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alert"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait(self, count: int = 1, timeout: float = 30.0) -> list[dict]:
        import time

        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def alert_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    monkeypatch.setenv(settings.ALERT_WEBHOOK_ENV, receiver.url)
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def postgres_server(quartet_home: Path):
    """One PostgreSQL server for the session (lab/postgres.py): a testcontainers container when
    a Docker engine answers, else the local server from the machine's binaries, its data in a
    folder of its own (under /tmp: the postgres user cannot enter pytest's 0700 temp folders).
    Exported as QUARTET_POSTGRES_URL, so ``postgres.database_url(name)`` uses it; stopped at the
    end only if this session started it."""
    import shutil
    import tempfile

    from lab import postgres

    previous = {key: os.environ.get(key) for key in (postgres.URL_ENV, postgres.HOME_ENV)}
    folder = None
    if not previous[postgres.URL_ENV] and not previous[postgres.HOME_ENV]:
        folder = Path(tempfile.mkdtemp(prefix="quartet-pg-"))
        folder.chmod(0o755)
        os.environ[postgres.HOME_ENV] = str(folder)
    server = postgres.start()
    os.environ[postgres.URL_ENV] = server.admin_url
    yield server
    server.stop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if folder is not None:  # a fresh folder: its server was started, and now stopped, here
        shutil.rmtree(folder, ignore_errors=True)
