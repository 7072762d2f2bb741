"""docker/prefect/ holds the services `quartet up prefect` runs, with the same settings (the compose
schema and hadolint checks of every stack: tests/core/test_docker_stacks.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from core import settings

DOCKER = settings.REPO_ROOT / "docker" / "prefect"


def test_compose_services_match_quartet_up(quartet_home, monkeypatch) -> None:
    from orchestrators.prefect.harness import deploy

    monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)
    local = {
        s.name: s for s in deploy.topology("postgresql+asyncpg://u:p@127.0.0.1:1/prefect").services
    }
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]

    assert set(local) <= set(services)
    assert "postgres" in services  # the metadata database is a service of its own
    for name, service in local.items():
        command = services[name]["command"]
        if name == "source-api":
            assert command[:3] == ["python", "-m", "source_api"] == [
                "python", *service.argv[1:3]
            ]  # fmt: skip
        else:  # the same Prefect command and flags; only the addresses differ
            assert command[0] == Path(service.argv[0]).name == "prefect"
            flags = [a for a in command[1:] if not a[0].isdigit()]
            assert flags == [a for a in service.argv[1:] if not a[0].isdigit()], name
        # every setting `quartet up` gives the process, the container gets too
        assert set(service.env) <= set(services[name]["environment"]), name
