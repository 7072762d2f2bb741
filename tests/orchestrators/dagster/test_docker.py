"""docker/dagster/: the compose stack validates without a Docker engine, and runs the same
services with the same settings and environment variable names as `quartet up dagster`."""

from __future__ import annotations

from pathlib import Path

import yaml

from core import settings

DOCKER = settings.REPO_ROOT / "docker" / "dagster"


def test_compose_runs_the_services_and_settings_of_quartet_up(quartet_home, monkeypatch):
    from orchestrators.dagster.harness import deploy

    # docker/dagster/ is the tuned deployment: compared with `quartet up`'s, levers on
    monkeypatch.delenv(settings.STOCK_ENV, raising=False)
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    state = {
        "grpc_port": 4000,
        "web_port": 3000,
        "postgres_url": "postgresql+psycopg2://u:p@h/dagster",
        "source_api_url": "http://127.0.0.1:8765",
        "source_api_port": 8765,
    }
    local = {s.name: s for s in deploy.topology(state).services}
    assert set(compose) == set(local) | {"postgres"}  # Postgres: core's provider, locally
    for name, service in local.items():
        if name == "source-api":
            continue
        assert set(compose[name]["environment"]) == set(service.env), name
        # the same program with the same role: dagster api grpc / dagster-webserver / daemon
        assert Path(service.argv[0]).name == compose[name]["command"][0], name
        command = compose[name]["command"]
        assert [a for a in service.argv if a.startswith("-")] == [
            a for a in command if a.startswith("-")
        ], name
        assert service.argv[1] == command[1], name  # api / run / -h
    assert set(deploy.SERVICE_ENV) <= set(compose["code-server"]["environment"])
    # Dagster's PostgreSQL sessions are the same as `quartet up`'s (synchronous_commit off)
    url = compose["code-server"]["environment"]["DAGSTER_POSTGRES_URL"]
    assert url.split("?")[1] == deploy.sqlalchemy_url("postgresql://u:p@h/dagster").split("?")[1]
    # dagster.yaml and workspace.yaml: what `quartet up` writes, the code server's host aside
    assert yaml.safe_load((DOCKER / "dagster.yaml").read_text()) == yaml.safe_load(
        deploy.instance_yaml()
    )
    assert yaml.safe_load((DOCKER / "workspace.yaml").read_text()) == yaml.safe_load(
        deploy.workspace_yaml(4000, "code-server")
    )
