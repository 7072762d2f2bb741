"""The parity claim, end to end: bare and the four orchestrators, each through its own entrypoint in
its own environment, build the same warehouse - for one month and for the whole year, converging
from a mid-year run - and each declares the canonical lineage.

Every run here is the user's command (``quartet run <name> ...``) in a subprocess; the session's
QUARTET_HOME is a temporary folder and one source API serves every run. That a second run changes
nothing is each orchestrator tier's test (through the orchestrator's own machinery: Dagster's
``execute``, Airflow's ``dag.test``, Prefect's flow, Temporal's run command); the full-year test
here is a second run of every entrypoint over a warehouse that already holds half the year.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import lineage, settings
from lab.fingerprint import describe_diffs, diff, fingerprint
from tests.helpers import quartet

ORCHESTRATORS = settings.ORCHESTRATORS
MID_YEAR, YEAR_END = "2013-06-30", "2013-12-31"


def run(name: str, *flags: str) -> float:
    """``quartet run <name> <flags>``; fails the test with the run's own output otherwise."""
    started = time.perf_counter()
    result = quartet("run", name, *flags, timeout=1800)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, (
        f"quartet run {name} {flags} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return seconds


def run_at_once(runs: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """``run`` for several pipelines at once (``{name: flags}``), as a user may: each has its
    own warehouse and orchestrator home. The runs mostly wait (services starting, units
    polled), so together they take far less than one after another (ADR 0018). The seconds are
    each run's wall time beside the others: upper bounds, not benchmarks."""
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(run, name, *flags) for name, flags in runs.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_same(name: str, expected, actual) -> None:
    differences = diff(expected, actual)
    assert differences == [], (
        f"{name} differs from bare:\n{describe_diffs('bare', name, differences)}"
    )


@pytest.fixture(scope="module")
def january(source_api, quartet_home):
    """bare and the four, as of the end of January 2013, in a home of their own."""
    names = ("bare", *ORCHESTRATORS)
    run_at_once({name: ("--as-of", "2013-01-31") for name in names})
    return {name: fingerprint(settings.for_pipeline(name).warehouse) for name in names}


@pytest.mark.parametrize("name", ORCHESTRATORS)
def test_one_month_every_orchestrator_builds_the_bare_warehouse(january, name):
    prints = january
    assert prints["bare"].tables["marts.fct_flights"].rows > 0
    assert_same(name, prints["bare"], prints[name])


def test_compare_prints_one_table_and_exits_zero_when_all_five_agree(january):
    prints = january
    result = quartet("compare")
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0]
    assert all(name in header for name in ("bare", *ORCHESTRATORS))
    assert "5 warehouses" in result.stdout and "identical to bare" in result.stdout
    fct = next(line for line in result.stdout.splitlines() if line.startswith("marts.fct_flights"))
    rows = f"{prints['bare'].tables['marts.fct_flights'].rows:,}"
    assert fct.count(rows) == 5 and fct.count("✓") == 4


@pytest.mark.parametrize("name", ORCHESTRATORS)
def test_lineage_each_orchestrator_declares_is_the_canonical_graph(name, quartet_home):
    result = quartet("lineage", name, "--json")
    assert result.returncode == 0, result.stderr
    declared = lineage.Graph.from_json(json.loads(result.stdout))
    assert lineage.canonical().difference(declared) == []


@pytest.mark.slow
def test_full_year_every_orchestrator_converges_from_mid_year(
    source_api, tmp_path_factory, monkeypatch
):
    """Per orchestrator: as of mid-year, then year end (the second run loads only what was
    published since) - compared with one bare run of the whole year."""
    home = tmp_path_factory.mktemp("year")
    monkeypatch.setenv("QUARTET_HOME", str(home))
    # bare's whole year beside the orchestrators' first half, then their second half
    run_at_once({"bare": ("--as-of", YEAR_END)} | {n: ("--as-of", MID_YEAR) for n in ORCHESTRATORS})
    bare = fingerprint(settings.for_pipeline("bare").warehouse)
    assert bare.tables["marts.fct_flights"].rows == 336_776
    warehouses = {name: settings.for_pipeline(name).warehouse for name in ORCHESTRATORS}
    for name, warehouse in warehouses.items():
        assert fingerprint(warehouse).tables["marts.fct_flights"].rows < 336_776, name
    timings = run_at_once({name: ("--as-of", YEAR_END) for name in ORCHESTRATORS})
    failures = [
        describe_diffs("bare", f"{name} (mid-year, then year end)", differences)
        for name, warehouse in warehouses.items()
        if (differences := diff(bare, fingerprint(warehouse)))
    ]
    print(
        "wall seconds of the year-end runs, run at once:",
        json.dumps({k: round(v, 1) for k, v in timings.items()}),
    )
    assert failures == []
