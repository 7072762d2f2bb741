"""Project rules that keep Quartet honest: imports point down (orchestrators -> lab -> core;
source_api stands alone), generated state is ignored, names live in one place."""

from __future__ import annotations

import ast
import subprocess

import pytest

from core import settings

ORCHESTRATOR_MODULES = {
    "dagster", "dagster_dlt", "dagster_dbt", "dagster_duckdb", "dagster_webserver",
    "airflow", "cosmos", "prefect", "prefect_dbt", "temporalio",
}  # fmt: skip


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_orchestrator():
    offenders = {}
    for path in sorted((settings.REPO_ROOT / "core").rglob("*.py")):
        bad = imported_modules(ast.parse(path.read_text())) & ORCHESTRATOR_MODULES
        if bad:
            offenders[str(path.relative_to(settings.REPO_ROOT))] = sorted(bad)
    assert offenders == {}


def _imports_of(room: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(settings.REPO_ROOT)): imported_modules(ast.parse(path.read_text()))
        for path in sorted((settings.REPO_ROOT / room).rglob("*.py"))
    }


#: what each room of the house may not import (the rest of the repo, or nothing of it)
FORBIDDEN = {
    "core": {"lab", "source_api", "orchestrators", "tests", "examples"},
    "lab": {"orchestrators", "tests"},
    "source_api": {"core", "lab", "orchestrators", "tests", "examples"},
    # an example is a user's pipeline: it uses core's public names, nothing else of the house
    # (its own tests may use the tests' helpers)
    "examples": {"lab", "source_api", "orchestrators"},
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_point_down(room):
    offenders = {
        path: sorted(names & FORBIDDEN[room])
        for path, names in _imports_of(room).items()
        if names & FORBIDDEN[room]
    }
    assert offenders == {}


def test_the_import_check_catches_an_orchestrator_import():
    tree = ast.parse("import os\nfrom dagster import asset\nimport temporalio.client\n")
    assert imported_modules(tree) & ORCHESTRATOR_MODULES == {"dagster", "temporalio"}


@pytest.mark.parametrize(
    "path",
    [
        "warehouse/bare.duckdb",
        "warehouse/bare.duckdb.wal",
        ".quartet/dagster/home/dagster.yaml",
        ".venvs/base/bin/python",
        "transform/target/manifest.json",
        "transform/logs/dbt.log",
        ".dlt/secrets.toml",
        "core/__pycache__/settings.cpython-311.pyc",
    ],
)
def test_generated_state_is_gitignored(path):
    result = subprocess.run(
        ["git", "check-ignore", "-q", path], cwd=settings.REPO_ROOT, capture_output=True
    )
    assert result.returncode == 0, f"{path} is not ignored"


def test_no_generated_state_is_tracked():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=settings.REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    generated = [
        p for p in tracked
        if p.endswith((".duckdb", ".db", ".pyc", "partial_parse.msgpack"))
        or "/target/" in p or p.startswith(("warehouse/", ".quartet/"))
    ]  # fmt: skip
    assert generated == []


def private_imports(tree: ast.AST, own_package: str) -> list[str]:
    """``from pkg.mod import _name`` / ``pkg.mod._name`` where pkg is not the importer's package."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package = node.module.split(".")[0]
            private_module = any(
                part.startswith("_") and part != "__main__" for part in node.module.split(".")
            )
            for alias in node.names:
                if (
                    package in ("core", "orchestrators")
                    and node.module.split(".")[:2] != own_package.split(".")[:2]
                ) and (alias.name.startswith("_") or private_module):
                    found.append(f"{node.module}.{alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            base = node.value
            chain = []
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if (
                isinstance(base, ast.Name)
                and base.id in ("dbt", "pipeline", "settings", "lineage", "warehouse", "kit")
                and own_package.startswith("orchestrators")
            ):
                found.append(f"{base.id}.{node.attr}")
    return found


def _package_of(path) -> str:
    parts = path.relative_to(settings.REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:2]) if parts[0] == "orchestrators" else parts[0]


def test_no_private_import_across_packages():
    offenders = {}
    for root in ("core", "orchestrators"):
        for path in sorted((settings.REPO_ROOT / root).rglob("*.py")):
            bad = private_imports(ast.parse(path.read_text()), _package_of(path))
            if bad:
                offenders[str(path.relative_to(settings.REPO_ROOT))] = bad
    assert offenders == {}


def test_the_private_import_check_catches_one():
    tree = ast.parse(
        "from core.dbt import _release_warehouse\nfrom core import dbt\ndbt._seed_partial_parse(x)\n"
    )
    assert private_imports(tree, "orchestrators.airflow") == [
        "core.dbt._release_warehouse",
        "dbt._seed_partial_parse",
    ]
    assert (
        private_imports(
            ast.parse("from orchestrators.airflow.tasks import _window\n"), "orchestrators.airflow"
        )
        == []
    )


GENERATED_DOCS = ("docs/reliability.md", "docs/reliability.json", "docs/lineage.md")


def test_generated_docs_carry_no_machine_paths():
    """Generated pages and their JSON are read on other machines: no temporary home, no checkout
    path or interpreter of the machine that measured them."""
    offenders = []
    for name in GENERATED_DOCS:
        path = settings.REPO_ROOT / name
        text = path.read_text()
        for needle in ("/tmp/", str(settings.REPO_ROOT), "/root/", "/home/"):
            if needle in text:
                offenders.append(f"{path.relative_to(settings.REPO_ROOT)}: {needle}")
    assert not offenders, offenders


def test_the_orchestrators_are_named_once():
    """settings.ORCHESTRATORS (the order the docs show) is the set of adapter folders, which is
    what the Makefile's environments and test tiers are made from."""
    folders = {p.parent.name for p in (settings.REPO_ROOT / "orchestrators").glob("*/__main__.py")}
    assert set(settings.ORCHESTRATORS) == folders
    assert len(settings.ORCHESTRATORS) == len(folders)
