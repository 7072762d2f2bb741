"""The whole year on PostgreSQL equals the whole year on DuckDB (the user's commands, slow).

``quartet run bare --as-of 2013-12-31`` into warehouse/bare.duckdb, then the same with
``--warehouse <url>`` into a database of the session's server (not named ``warehouse_*``, which
``quartet compare`` would list beside bare in later tests); the two fingerprints (``quartet
fingerprint``, content across engines: ADR 0011) are equal.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core import settings
from lab import postgres
from lab.fingerprint import describe_diffs, diff, fingerprint

YEAR_END = "2013-12-31"


def quartet(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lab.cli", *args],
        capture_output=True,
        text=True,
        cwd=settings.REPO_ROOT,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"quartet {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.mark.slow
def test_full_year_on_postgres_equals_the_full_year_on_duckdb(
    source_api, postgres_server, tmp_path, monkeypatch
):
    # a home of its own: the session home's bare warehouse is the January reference of others
    monkeypatch.setenv("QUARTET_HOME", str(tmp_path / "home"))
    quartet("run", "bare", "--as-of", YEAR_END)
    duckdb_print = fingerprint(settings.for_pipeline("bare").warehouse)
    assert duckdb_print.tables["marts.fct_flights"].rows == 336_776

    url = postgres.database_url("pgparity_year")
    ran = quartet("run", "bare", "--warehouse", url, "--as-of", YEAR_END)
    assert postgres.mask(url) in ran.stdout
    postgres_print = fingerprint(url)
    differences = diff(duckdb_print, postgres_print)
    assert differences == [], describe_diffs("duckdb", "postgres", differences)

    shown = json.loads(quartet("fingerprint", url, "--json").stdout)
    assert shown["path"] == postgres.mask(url)
    assert shown["tables"] == duckdb_print.to_json()["tables"]
