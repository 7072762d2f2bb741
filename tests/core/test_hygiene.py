"""Project rules that keep Quartet honest: core/ is orchestrator-agnostic, generated state is ignored."""

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
