"""A real PostgreSQL server for tests, deployments and the optional Postgres warehouse.

Two ways to get one, chosen by :func:`start`:

* **testcontainers** - ``PostgresContainer`` (a throwaway ``postgres:15`` container) when a
  Docker engine answers ``docker.from_env().ping()`` (probed with a short timeout: no engine
  costs a few milliseconds);
* **local server** - otherwise, a server from the machine's PostgreSQL binaries (``initdb`` and
  ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin`` or ``PATH``; ``make postgres`` installs
  Debian's package when they are missing). It runs as the ``postgres`` user when this process is
  root (``runuser -u postgres --``: initdb refuses root), keeps its data under the gitignored
  state folder (``.quartet/postgres/``, or ``QUARTET_POSTGRES_HOME``), listens on 127.0.0.1 only
  (its unix socket in that folder too) on a free port, and persists across commands. Auth on
  loopback is scram-sha-256 with a generated superuser password kept in ``server.json`` (mode
  0600): other users of a shared machine cannot walk in, and a wrong password is a real error.

A server named by ``QUARTET_POSTGRES_URL`` (the admin URL of a container, a managed instance, or
the session server of the tests) takes precedence over both: then nothing is started here.

Public API (stable; other modules and the orchestrators' deployed mode use only this):

``database_url(name) -> str``
    URL of database ``name`` on the server (started if needed), created on first use. One
    database per consumer: ``dagster``, ``airflow``, ``prefect``, ``warehouse_bare``, ...
``admin_url() -> str``
    URL of the server's ``postgres`` database as its superuser (the server started if needed).
``up() -> Server``
    Start the local server (idempotent: a running one is returned as is); returns once it
    accepts connections. ``quartet postgres up``.
``down() -> bool``
    Stop the local server (``pg_ctl stop -m fast``); no process stays behind. False when it was
    not running. ``quartet postgres down``.
``status() -> Server | None``
    The running local server, or None.
``start(prefer_container=True) -> Server``
    A server for a test session: a container when Docker answers, else the local server.
    ``Server.stop()`` stops it only if this call started it.
``docker_available() -> bool``, ``mask(url) -> str``, ``PostgresError``.

Errors are :class:`PostgresError` with a message that names the service and its log file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from core import settings
from core.failures import PostgresError
from core.net import free_port
from core.warehouse import mask

#: admin URL of an existing server to use instead of starting one
URL_ENV = "QUARTET_POSTGRES_URL"
#: folder of the local server (default: <state dir>/postgres)
HOME_ENV = "QUARTET_POSTGRES_HOME"
SUPERUSER = "postgres"
OS_USER = "postgres"
IMAGE = "postgres:15"
START_TIMEOUT = 60
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class Server:
    """A running PostgreSQL server."""

    kind: str  #: "local", "testcontainers" or "external"
    admin_url: str
    log_file: Path | None = None
    started_here: bool = False
    _stop: object = field(default=None, repr=False)

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    def stop(self) -> None:
        """Stop the server if this process started it (else leave it running)."""
        if self.started_here and callable(self._stop):
            self._stop()
            self.started_here = False


# ---------------------------------------------------------------------------- URLs


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def is_postgres_url(value: str | os.PathLike | None) -> bool:
    return isinstance(value, str) and value.split("://", 1)[0] in ("postgresql", "postgres")


# ---------------------------------------------------------------------------- choice


def docker_available(timeout: float = 0.5) -> bool:
    """True when a Docker engine answers a ping (within ``timeout`` seconds)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _container_class():
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.15 kept it here
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer


def start(*, prefer_container: bool = True) -> Server:
    """A server for a session: ``QUARTET_POSTGRES_URL`` if set, a container if Docker answers,
    else the local server (left running afterwards if it was already running)."""
    if os.environ.get(URL_ENV):
        return Server(kind="external", admin_url=os.environ[URL_ENV])
    if prefer_container and docker_available():
        return _start_container()
    running = status()
    if running is not None:
        return running
    server = up()
    server.started_here = True
    server._stop = down
    return server


def _start_container() -> Server:
    password = secrets.token_urlsafe(16)
    container = _container_class()(
        IMAGE, username=SUPERUSER, password=password, dbname="postgres", driver=None
    )
    try:
        container.start()
    except Exception as exc:
        raise PostgresError(
            f"PostgreSQL (testcontainers, image {IMAGE}) did not start: {exc}. The container "
            "log is in `docker logs`; without Docker the local server is used instead."
        ) from exc
    url = container.get_connection_url(driver=None)
    return Server(kind="testcontainers", admin_url=url, started_here=True, _stop=container.stop)


# ---------------------------------------------------------------------------- local server


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or settings.state_dir() / "postgres").resolve()


def _paths() -> dict[str, Path]:
    root = home()
    return {
        "root": root,
        "data": root / "data",
        "socket": root / "run",
        "log": root / "server.log",
        "state": root / "server.json",
        "lock": root / "server.lock",
    }


def binary(name: str) -> str:
    """Path of a PostgreSQL program (initdb, pg_ctl, ...): Debian's folders first, then PATH."""
    candidates = [Path("/usr/lib/postgresql/15/bin") / name]
    candidates += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise PostgresError(
        f"PostgreSQL's {name} is not installed (looked in /usr/lib/postgresql/*/bin and PATH): "
        "run `make postgres` (apt-get install postgresql-15), or point QUARTET_POSTGRES_URL at a "
        "running server."
    )


def _as_server_user(cmd: list[str]) -> list[str]:
    """Run as the postgres user when root (initdb and postgres refuse to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *cmd]
    return cmd


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, OS_USER, OS_USER)


def _check_reachable(root: Path) -> None:
    """As root, the postgres user must be able to walk down to the data folder."""
    if os.geteuid() != 0:
        return
    for parent in root.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise PostgresError(
                f"PostgreSQL (local server): the postgres user cannot reach {root} because "
                f"{parent} is not searchable by others (mode {oct(mode & 0o777)}). Set "
                f"{HOME_ENV} to a folder outside it (e.g. under /tmp)."
            )


def _read_state() -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(_paths()["state"].read_text())
    return {}


def _write_state(state: dict) -> None:
    path = _paths()["state"]
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)


def _run(cmd: list[str], what: str, log: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PostgresError(
            f"PostgreSQL (local server): {what} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-800:]}. Server log: {log}"
        )
    return result


def _running_port(data: Path) -> int | None:
    """Port of the server running on ``data`` (from postmaster.pid), or None."""
    pid_file = data / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return port


def _local_url(state: dict, port: int, database: str = "postgres") -> str:
    return (
        f"postgresql://{SUPERUSER}:{quote(state['password'], safe='')}@127.0.0.1:{port}/{database}"
    )


def _initdb(p: dict[str, Path]) -> dict:
    password = secrets.token_urlsafe(18)
    pwfile = p["root"] / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _own(pwfile)
    try:
        _run(
            _as_server_user(
                [
                    binary("initdb"),
                    "-D", str(p["data"]),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            ),
            f"initdb of {p['data']}",
            p["log"],
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    state = {"password": password, "port": None, "data_dir": str(p["data"])}
    _write_state(state)
    return state


def status() -> Server | None:
    """The running local server, or None."""
    p = _paths()
    state = _read_state()
    port = _running_port(p["data"])
    if port is None or "password" not in state:
        return None
    return Server(kind="local", admin_url=_local_url(state, port), log_file=p["log"])


@contextlib.contextmanager
def _locked() -> object:
    p = _paths()
    p["root"].mkdir(parents=True, exist_ok=True)
    with open(p["lock"], "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up() -> Server:
    """Start the local server (initdb on first use); idempotent; returns once it accepts."""
    p = _paths()
    with _locked():
        running = status()
        if running is not None:
            return running
        _check_reachable(p["root"])
        for folder in (p["root"], p["socket"]):
            folder.mkdir(parents=True, exist_ok=True)
            _own(folder)
        p["root"].chmod(0o700)
        p["log"].touch()
        _own(p["log"])
        state = _read_state()
        if not (p["data"] / "PG_VERSION").exists() or "password" not in state:
            if p["data"].exists():
                shutil.rmtree(p["data"])
            state = _initdb(p)
        port = free_port(state.get("port"))
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {p['socket']} "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        _run(
            _as_server_user(
                [
                    binary("pg_ctl"), "-D", str(p["data"]), "-l", str(p["log"]),
                    "-w", "-t", str(START_TIMEOUT), "-o", options, "start",
                ]
            ),
            f"pg_ctl start on 127.0.0.1:{port}",
            p["log"],
        )  # fmt: skip
        state["port"] = port
        _write_state(state)
        server = Server(kind="local", admin_url=_local_url(state, port), log_file=p["log"])
        _wait_accepting(server.admin_url, p["log"])
        print(
            f"PostgreSQL: started the local server on 127.0.0.1:{port} (data and log in "
            f"{settings.shown_path(p['root'])}; `quartet postgres down` stops it)",
            file=sys.stderr,
            flush=True,
        )
        return server


def _wait_accepting(url: str, log: Path | None, timeout: float = START_TIMEOUT) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"PostgreSQL at {mask(url)} does not accept connections after {timeout:.0f}s: "
                    f"{str(exc).strip()}. Server log: {log}"
                ) from exc
            time.sleep(0.1)


def down() -> bool:
    """Stop the local server; False when it was not running. Leaves no process behind."""
    p = _paths()
    if not (p["data"] / "PG_VERSION").exists():
        return False
    with _locked():
        if _running_port(p["data"]) is None:
            return False
        _run(
            _as_server_user([binary("pg_ctl"), "-D", str(p["data"]), "-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
            p["log"],
        )
        return True


# ---------------------------------------------------------------------------- databases


def admin_url() -> str:
    """The superuser URL of the server: QUARTET_POSTGRES_URL, else the local server (started)."""
    return os.environ.get(URL_ENV) or up().admin_url


def database_url(name: str) -> str:
    """URL of database ``name`` (created if missing) on the server, started if needed."""
    import psycopg2
    from psycopg2 import errors, sql

    if not NAME_RE.match(name):
        raise ValueError(f"database name must match {NAME_RE.pattern}, got {name!r}")
    admin = admin_url()
    try:
        con = psycopg2.connect(admin, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        where = _paths()["log"] if not os.environ.get(URL_ENV) else f"{URL_ENV}={mask(admin)}"
        raise PostgresError(
            f"PostgreSQL at {mask(admin)} refused the connection: {str(exc).strip()} "
            f"(server log / setting: {where})"
        ) from exc
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone() is None:
                with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                    cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    finally:
        con.close()
    return with_database(admin, name)
