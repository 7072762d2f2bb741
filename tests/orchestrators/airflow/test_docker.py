"""docker/airflow/: valid without a Docker engine, and the same services and settings as
``quartet up airflow`` starts locally."""

from __future__ import annotations

import pytest

from core import settings

DOCKER = settings.REPO_ROOT / "docker" / "airflow"
#: what differs only because the local services are processes on one machine, not containers
LOCAL_ONLY = {"PATH"}


def compose() -> dict:
    import yaml

    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture
def local_topology(quartet_home, monkeypatch: pytest.MonkeyPatch):
    from orchestrators.airflow.harness import deploy

    # as a user's `quartet up` runs it: its own source API (an earlier test may have set one)
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)

    env = deploy.deployed_env("postgresql+psycopg2://airflow@127.0.0.1/airflow")
    return deploy.topology(env)


def test_compose_services_and_settings_match_quartet_up(local_topology):
    topology = local_topology
    services = compose()["services"]
    local = {s.name for s in topology.services}
    assert {f"airflow-{n}" if n != "source-api" else n for n in local} | {
        "postgres",
        "airflow-init",
    } == set(services)
    for service in topology.services:
        if service.name == "source-api":
            continue
        in_compose = set(services[f"airflow-{service.name}"]["environment"])
        assert in_compose == set(service.env) - LOCAL_ONLY, service.name
        command = services[f"airflow-{service.name}"]["command"]
        # `python -m airflow <command>` locally, the image's `airflow` entrypoint in compose
        assert (command if isinstance(command, list) else [command]) == service.argv[3:]
    assert set(services["source-api"]["environment"]) >= {settings.SOURCE_API_TOKEN_ENV}
    # the modules the scheduler's forkserver imports for every task: the same list in both
    scheduler = topology.service("scheduler")
    preload = "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"
    assert services["airflow-scheduler"]["environment"][preload] == scheduler.env[preload]


def test_compose_listens_on_loopback_only_and_runs_no_log_server():
    """What compose publishes binds the host's loopback; the scheduler and the triggerer run
    without Airflow's log server (it binds every interface): all containers share the logs
    volume, from which the api-server reads the task logs."""
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {"airflow-api-server": ["127.0.0.1:8080:8080"]}
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert "--skip-serve-logs" in services[name]["command"], name
    logs = "airflow-logs:/opt/airflow/logs"
    assert all(logs in s["volumes"] for n, s in services.items() if n.startswith("airflow-"))
