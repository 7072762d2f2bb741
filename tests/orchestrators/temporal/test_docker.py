"""docker/temporal/: the compose stack and the project image, validated without a Docker engine."""

from __future__ import annotations

import yaml

from core import settings
from orchestrators.temporal.harness import deploy

STACK = settings.REPO_ROOT / "docker" / "temporal"


def test_the_stack_runs_the_real_server_on_postgres_and_the_workers_quartet_up_runs(
    quartet_home,
) -> None:
    services = yaml.safe_load((STACK / "compose.yaml").read_text())["services"]
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert "setup-postgres.sh" in services["temporal-admin-tools"]["command"]
    assert "create-namespace.sh" in services["temporal-create-namespace"]["command"]
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    # the worker: the same command and the same environment variable names as `quartet up`
    local = deploy.topology().service("worker-1")
    worker = services["worker"]
    assert worker["command"] == ["python", *local.argv[1:]]
    assert set(worker["environment"]) == set(local.env)
    assert worker["deploy"]["replicas"] == len(deploy.WORKERS)
