"""PostgreSQL: the provider (lab/postgres.py) and the warehouse on PostgreSQL.

One server for the session (the ``postgres_server`` fixture); each warehouse is a database of
its own on it. The DuckDB reference is the session's ``bare_january``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core import pipeline, settings, warehouse
from lab import postgres
from lab.fingerprint import describe_diffs, diff, fingerprint
from tests.conftest import JANUARY

FEBRUARY = "2013-02-28"


def quiet(_: str) -> None:
    pass


def assert_same(expected, actual, what: str) -> None:
    differences = diff(expected, actual)
    assert differences == [], f"{what}:\n{describe_diffs('expected', what, differences)}"


def run_on(url: str, name: str, **kwargs) -> list[pipeline.IngestResult]:
    """A bare run named ``name`` into the PostgreSQL warehouse ``url``."""
    previous = os.environ.get(settings.WAREHOUSE_URL_ENV)
    os.environ[settings.WAREHOUSE_URL_ENV] = url
    try:
        return pipeline.run(name, log=quiet, **kwargs)
    finally:
        if previous is None:
            os.environ.pop(settings.WAREHOUSE_URL_ENV, None)
        else:
            os.environ[settings.WAREHOUSE_URL_ENV] = previous
        os.environ.update(settings.dbt_target_env(None))


# ---------------------------------------------------------------------------- the provider


def test_provider_takes_testcontainers_when_a_docker_engine_answers(monkeypatch):
    started = []

    class FakeContainer:
        def __init__(self, image, **kwargs):
            self.image, self.kwargs = image, kwargs

        def start(self):
            started.append(self)

        def get_connection_url(self, driver=None):
            return f"postgresql://postgres:{self.kwargs['password']}@127.0.0.1:55432/postgres"

        def stop(self):
            started.remove(self)

    monkeypatch.delenv(postgres.URL_ENV, raising=False)
    monkeypatch.setattr(postgres, "docker_available", lambda timeout=0.5: True)
    monkeypatch.setattr(postgres, "_container_class", lambda: FakeContainer)
    server = postgres.start()
    assert server.kind == "testcontainers" and server.started_here
    assert started and started[0].image.startswith("postgres:")
    assert started[0].kwargs["driver"] is None
    assert server.url("dagster").endswith("@127.0.0.1:55432/dagster")
    server.stop()
    assert started == []


def test_the_container_class_comes_from_testcontainers():
    cls = postgres._container_class()
    assert cls.__name__ == "PostgresContainer" and cls.__module__.startswith("testcontainers")


def test_no_docker_engine_costs_well_under_a_second():
    started = time.perf_counter()
    available = postgres.docker_available()
    assert time.perf_counter() - started < 1.0
    if available:
        pytest.skip("a Docker engine answers here: the fallback is not what start() picks")


def test_without_docker_the_session_server_is_the_local_fallback(postgres_server):
    if postgres.docker_available():
        pytest.skip("a Docker engine answers here")
    assert postgres_server.kind == "local"
    url = postgres.database_url("consumer_one")
    assert url == postgres.database_url("consumer_one")  # twice: created once, same URL
    import psycopg2

    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute("select current_database(), inet_server_addr()::text")
        assert cur.fetchone() == ("consumer_one", "127.0.0.1/32")
    with pytest.raises(ValueError, match="database name"):
        postgres.database_url("Robert'); drop table x;--")


def test_local_server_up_twice_url_down_leaves_no_process(tmp_path_factory, monkeypatch):
    """The persistent server of `quartet postgres up|url|down`, for real, in a folder of its own."""
    if not any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        pytest.skip("no PostgreSQL binaries (make postgres installs them)")
    folder = Path("/tmp") / f"quartet-pg-cli-{os.getpid()}"
    folder.mkdir(mode=0o755, exist_ok=True)
    env = {**os.environ, postgres.HOME_ENV: str(folder)}
    env.pop(postgres.URL_ENV, None)

    def quartet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lab.cli", "postgres", *args],
            capture_output=True, text=True, env=env, cwd=settings.REPO_ROOT, timeout=120,
        )  # fmt: skip

    try:
        first = quartet("up")
        assert first.returncode == 0, first.stderr
        assert "PostgreSQL: started the local server on 127.0.0.1:" in first.stderr
        again = quartet("up")
        url = quartet("url").stdout.strip()
        assert again.returncode == 0 and "started" not in again.stderr  # the same server
        assert postgres.mask(url) in again.stdout and postgres.mask(url) in first.stdout
        password = urlsplit(url).password
        assert password and password not in first.stdout + first.stderr + again.stdout
        assert quartet("url", "airflow").stdout.strip().endswith("/airflow")
        pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
        down = quartet("down")
        assert down.returncode == 0 and "stopped" in down.stdout
        assert not alive(pid), f"postmaster {pid} still runs after `quartet postgres down`"
        assert "not running" in quartet("down").stdout
        assert quartet("status").returncode == 1
    finally:
        subprocess.run(
            [sys.executable, "-m", "lab.cli", "postgres", "down"], env=env, capture_output=True
        )
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int, wait: float = 5.0) -> bool:
    """A process that runs (a zombie waiting for its reaper does not count)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------------------- the warehouse


@pytest.fixture(scope="module")
def pg_january(postgres_server, bare_january):
    """bare on PostgreSQL, January (as of its end, partition 2013-01). Test databases are not
    named warehouse_*: `quartet compare` would show them beside bare in later tests."""
    url = postgres.database_url("pgtest_january")
    results = run_on(url, "pg_january", as_of=JANUARY, partitions=["2013-01"])
    return url, results


def test_bare_on_postgres_has_the_fingerprint_of_bare_on_duckdb(pg_january, bare_january):
    url, results = pg_january
    assert {r.window.resources for r in results} == {
        (resource,) for resource in settings_resources()
    }, "on PostgreSQL each resource is an ingestion unit of its own"
    actual = fingerprint(url)
    assert "***" in actual.path and postgres.mask(url) == actual.path
    assert actual.tables["marts.fct_flights"].rows > 20_000
    assert_same(bare_january, actual, "bare on PostgreSQL")
    assert actual.digest() == bare_january.digest()


def settings_resources() -> tuple[str, ...]:
    from core.ingestion import load_config

    return load_config().resources


def test_a_postgres_rerun_changes_nothing(pg_january):
    url, _ = pg_january
    before = fingerprint(url)
    run_on(url, "pg_january", as_of=JANUARY, partitions=["2013-01"])
    assert_same(before, fingerprint(url), "the rerun")


def test_shuffled_months_on_postgres_equal_the_in_order_months(pg_january, postgres_server):
    """In order: January then February into the January warehouse; shuffled: February then
    January into a fresh database."""
    url, _ = pg_january
    run_on(url, "pg_january", as_of=FEBRUARY, partitions=["2013-02"])
    shuffled = postgres.database_url("pgtest_shuffled")
    run_on(shuffled, "pg_shuffled", as_of=FEBRUARY, partitions=["2013-02", "2013-01"])
    in_order = fingerprint(url)
    assert in_order.tables["marts.fct_flights"].rows > 45_000
    assert_same(in_order, fingerprint(shuffled), "shuffled months on PostgreSQL")


def test_duckdb_and_postgres_side_by_side_in_quartet_compare(pg_january, bare_january, tmp_path):
    from lab.compare import compare_all

    url, _ = pg_january
    (tmp_path / "bare.duckdb").symlink_to(settings.for_pipeline("bare").warehouse)
    report = compare_all(tmp_path, extra={"jan@pg": url}, discover=False)
    assert list(report.prints) == ["bare", "jan@pg"]
    assert "jan@pg" in report.render().splitlines()[0]


def test_a_bad_warehouse_url_is_named_masked_and_loses_nothing(pg_january):
    """A wrong password, an unreachable server, a missing database: each fails before anything
    is loaded, naming the URL with its password masked; the warehouse is as it was."""
    from core.net import free_port

    url, _ = pg_january
    before = fingerprint(url)
    credentials = url.split("//", 1)[1].split("@", 1)[0]
    cases = {
        "password": url.replace(credentials, "postgres:not-the-password"),
        "unreachable": postgres.with_database(
            url.rsplit("@", 1)[0] + f"@127.0.0.1:{free_port()}/x", "pgtest_january"
        ),
        "does not exist": postgres.with_database(url, "pgtest_nobody_created"),
    }
    for expected, bad in cases.items():
        with pytest.raises(warehouse.WarehouseConnectionError) as failure:
            run_on(bad, "pg_bad", as_of=JANUARY, partitions=["2013-01"])
        message = str(failure.value)
        assert postgres.mask(bad) in message and expected in message, message
        assert "Nothing was loaded" in message
        password = bad.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert password not in message
    assert_same(before, fingerprint(url), "after the failed runs")


def test_parallel_writers_only_where_the_engine_allows_them():
    assert warehouse.allows_parallel_writers("postgresql://u:p@127.0.0.1:5432/w")
    assert not warehouse.allows_parallel_writers(Path("warehouse/bare.duckdb"))
    assert warehouse.loader_file_format("postgresql://u@h/w", "parquet") == "csv"
    assert warehouse.loader_file_format(Path("w.duckdb"), "parquet") == "parquet"


def test_mask_hides_only_the_password():
    assert (
        postgres.mask("postgresql://postgres:s3cr%40t@127.0.0.1:5432/db")
        == "postgresql://postgres:***@127.0.0.1:5432/db"
    )
    assert postgres.mask("postgresql://127.0.0.1/db") == "postgresql://127.0.0.1/db"
