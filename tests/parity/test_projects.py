"""Parity beyond the default project: the shop example (examples/shop: CSV files, its own dbt
project, no partitions) under bare and the four, each through its own entrypoint, builds one
warehouse, twice, and every orchestrator declares the shop's canonical lineage. Nothing of the
adapters names the shop: this is what "bring your own pipeline" promises."""

from __future__ import annotations

import json

import pytest

from core import project, settings
from tests.helpers import quartet

SHOP = settings.REPO_ROOT / "examples" / "shop" / "quartet.toml"


def shop(*args: str, timeout: float = 1800):
    result = quartet(*args, "--project", str(SHOP), timeout=timeout)
    assert result.returncode == 0, (
        f"quartet {' '.join(args)} --project shop failed:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def shop_runs(quartet_home):
    """bare and the four, each run twice (the second changes nothing), in the session home."""
    shop("run", "all")
    return shop("run", "all")


def test_every_orchestrator_builds_the_shop_warehouse_of_bare(shop_runs) -> None:
    result = shop("compare", "--json")
    report = json.loads(result.stdout)
    assert sorted(report["warehouses"]) == sorted(["bare", *settings.ORCHESTRATORS])
    tables = report["tables"]["bare"]
    schemas = {table.split(".")[0] for table in tables}
    assert {"shop_raw", "shop_staging", "shop_marts"} <= schemas  # every schema compared
    assert tables["shop_marts.orders"] == 3000 and tables["shop_raw.customers"] == 400
    assert report["identical"], result.stdout[-3000:]


@pytest.mark.parametrize("name", settings.ORCHESTRATORS)
def test_each_orchestrator_declares_the_shop_lineage(name: str, shop_runs) -> None:
    canonical = json.loads(shop("lineage", "canonical", "--json").stdout)
    declared = json.loads(shop("lineage", name, "--json").stdout)
    assert declared == canonical
    raw = {n["id"] for n in canonical["nodes"] if n["layer"] == "raw"}
    assert raw == {f"shop_raw.{r}" for r in project.load(SHOP).resource_names}
