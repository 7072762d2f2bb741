"""``--partition`` and ``--as-of`` mean the same thing to bare and to every orchestrator.

One run per pipeline, as a user types it (``quartet run <name> --partition 2013-02 --as-of
2013-02-15``), each in a QUARTET_HOME of its own, all five at once; checked on the warehouse it
leaves: raw.flights holds what was published in February up to the as-of instant, every day of
it, and nothing else.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core import settings
from tests.helpers import months_loaded, quartet, table_rows

MONTH, AS_OF = "2013-02", "2013-02-15"


@pytest.fixture(scope="module")
def runs(source_api, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The five commands at once, each in a home of its own: they share only the source API,
    and mostly wait, so together they take far less than one after another (ADR 0018)."""
    homes = {name: tmp_path_factory.mktemp(name) / "home" for name in settings.PIPELINE_NAMES}
    with ThreadPoolExecutor(len(homes)) as pool:
        futures = {
            name: pool.submit(
                quartet,
                "run",
                name,
                "--partition",
                MONTH,
                "--as-of",
                AS_OF,
                env={"QUARTET_HOME": str(home)},
            )
            for name, home in homes.items()
        }
        return {name: (homes[name], future.result()) for name, future in futures.items()}


@pytest.mark.parametrize("name", settings.PIPELINE_NAMES)
def test_partition_loads_exactly_that_month_as_of_the_clock(name, runs):
    home, result = runs[name]
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    warehouse = home / "warehouse" / f"{name}.duckdb"
    # a partition is a month of publications: February's flights, plus late corrections of
    # January's last flights published in February; nothing published before or after
    ((first, last),) = table_rows(
        warehouse, "select min(updated_at)::varchar, max(updated_at)::varchar from raw.flights"
    )
    assert first >= f"{MONTH}-01", f"{name} loaded a revision published at {first}"
    assert last <= f"{AS_OF} 23:59:59", f"{name} loaded a revision published at {last}"
    assert set(months_loaded(warehouse)) <= {"2013-01", MONTH}
    ((days,),) = table_rows(
        warehouse, "select count(distinct day) from raw.flights where month = 2"
    )
    assert days == 15  # the 1st to the 15th: everything published by then, no day missing
    ((marts_rows,),) = table_rows(warehouse, "select count(*) from marts.fct_flights")
    assert marts_rows > 0  # the run went through dbt too
