"""Deployed mode: ``prefect server start`` on PostgreSQL, a ``process`` work pool and its worker.

``quartet up prefect`` starts, each in its own process group (``core.kit.Topology``):

* ``source-api`` - the bundled demo API, for a project whose source is it (unless SOURCE_API_URL
  names one already running);
* ``server`` - ``prefect server start`` (API, UI, scheduler, automations) with its database on
  PostgreSQL (``lab.postgres.database_url("prefect")``, asyncpg; the ``pg_trgm`` extension its
  migrations need is created first);
* ``worker`` - ``prefect worker start --pool quartet --type process``: polls the pool and starts
  each flow run as a child process in the repository (the deployments' ``working_dir``), so the
  module entrypoints ``orchestrators.prefect.flows.<flow>`` resolve.

Then it registers, idempotently: the Secret block with the API token (a demo API project's), the
warehouse's concurrency limit, the deployments against the pool (schedule, and the trigger on new
source data where the project declares a freshness probe), and the automation that puts a
crashed run of theirs back to Scheduled once the worker is done with it, so the worker runs it
again with no manual step.

``quartet run prefect --deployed`` submits with ``run_deployment`` and follows the flow run until
it ends, printing the unit lines its flow-run processes log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

from core import kit, project, settings
from core.kit import NotDeployed, RunFailed, RunRequest, Service, Topology, progress
from core.net import free_port
from orchestrators.prefect import (
    CLIENT_AUTH_ENV,
    DEFAULT_UI_PORT,
    NAME,
    SERVER_AUTH_ENV,
    api_auth_string,
    configure,
    levers,
)

POOL = "quartet"
#: the progress lines of core.kit.progress.unit_line the flow runs log
UNIT_LINES = (f"[{NAME}] ingest  ", f"[{NAME}] dbt     ")
WORKER = "quartet-worker"
CRASH_AUTOMATION = "quartet: re-run crashed runs"
#: the deployed mode's own PREFECT_HOME (profiles, local result storage); not the dev one
HOME_DIR = "deployed-home"
PORT_ENV = "QUARTET_PREFECT_PORT"


def prefect_executable() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def server_service(
    port: int, *, home: Path, database_url: str | None = None, log: Path | None = None
) -> Service:
    """``prefect server start`` on 127.0.0.1:port: the one definition ``ui`` and ``up`` share.

    Without ``database_url`` the server keeps SQLite in ``home``; its API answers at
    ``http://127.0.0.1:<port>/api`` and is ready when ``/api/health`` answers (the one path
    Prefect serves without the credential). Every other call, and the UI, needs ``home``'s
    credential (basic auth, :func:`orchestrators.prefect.api_auth_string`), given to the process
    in its environment.
    """
    api = f"http://127.0.0.1:{port}/api"
    auth = api_auth_string(home)
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        SERVER_AUTH_ENV: auth,
        # the server's own clients (its CLI, its services) sign in too
        CLIENT_AUTH_ENV: auth,
    }
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return Service(
        name="server",
        argv=[prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        log=log or kit.log_dir(NAME) / "server.log",
        ready=f"{api}/health",
        env=env,
        url=f"http://127.0.0.1:{port}",
    )


# ------------------------------------------------------------------ where the services live


def _state_file() -> Path:
    return settings.orchestrator_dir(NAME) / "deployed.json"


def _state() -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(_state_file().read_text())
    return {}


def _ports(create: bool) -> dict[str, int] | None:
    """The server's and the source API's ports: recorded by ``up``, chosen once."""
    state = _state()
    if "server_port" in state:
        return state
    if not create:
        return None
    preferred = int(os.environ.get(PORT_ENV, DEFAULT_UI_PORT + 1))
    state = {"server_port": free_port(preferred), "source_api_port": free_port()}
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state))
    return state


def home() -> Path:
    path = settings.orchestrator_dir(NAME) / HOME_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def auth_string() -> str:
    """The deployed server's credential (``<home>/api_auth_string``, mode 600): what its clients
    send and what its UI asks for."""
    return api_auth_string(home())


def api_url(ports: dict | None = None) -> str:
    ports = ports or _ports(create=False)
    if ports is None:
        raise NotDeployed("prefect's deployed mode is not up: run `quartet up prefect`")
    return f"http://127.0.0.1:{ports['server_port']}/api"


def source_api_url(ports: dict) -> str:
    return os.environ.get(settings.SOURCE_API_URL_ENV) or (
        f"http://127.0.0.1:{ports['source_api_port']}"
    )


def source_api() -> tuple[str, str]:
    """``(url, token)`` of the demo API the deployed runs read (its clock is what the ``poll``
    deployment watches); ``("", "")`` for a project whose source is not that API."""
    ports = _ports(create=False)
    if ports is None:
        raise NotDeployed("prefect's deployed mode is not up: run `quartet up prefect`")
    if not project.current().demo_api:
        return "", ""
    return source_api_url(ports), _token()


def source_api_env(ports: dict) -> dict[str, str]:
    """Where the worker's flow runs find the demo API: only a project whose source is that API
    has one (the flows ask for its URL then, and only then)."""
    if not project.current().demo_api:
        return {}
    return {settings.SOURCE_API_URL_ENV: source_api_url(ports)}


def basic_auth() -> tuple[str, str]:
    """The credential as httpx's ``auth=`` (Prefect reads ``user:password`` from basic auth)."""
    user, _, password = auth_string().partition(":")
    return user, password


def _worker_online(api: str) -> bool:
    import httpx

    response = httpx.post(
        f"{api}/work_pools/{POOL}/workers/filter", json={}, timeout=5, auth=basic_auth()
    )
    return response.status_code == 200 and any(
        w["name"] == WORKER and w["status"] == "ONLINE" for w in response.json()
    )


def topology(database_url: str | None = None) -> Topology:
    """The services; ``database_url`` is only needed to start the server (``up``)."""
    ports = _ports(create=database_url is not None) or {"server_port": 0, "source_api_port": 0}
    api = api_url(ports)
    logs = kit.log_dir(NAME)
    services = []
    # the demo API runs for a project whose source is it, unless SOURCE_API_URL names one
    if project.current().demo_api and not os.environ.get(settings.SOURCE_API_URL_ENV):
        config = kit.source_api_config()
        argv = config.argv(port=ports["source_api_port"])  # (the token comes from the env)
        services.append(
            Service(
                name="source-api",
                argv=[sys.executable, "-m", "source_api", *argv],
                log=logs / "source-api.log",
                ready=source_api_url(ports),
                env={settings.SOURCE_API_TOKEN_ENV: _token()},
            )
        )
    services.append(server_service(ports["server_port"], home=home(), database_url=database_url))
    services.append(
        Service(
            name="worker",
            argv=[
                prefect_executable(), "worker", "start", "--pool", POOL, "--type", "process",
                "--name", WORKER,
            ],
            log=logs / "worker.log",
            ready=lambda: _worker_online(api),
            env={
                "PREFECT_HOME": str(home()),
                "PREFECT_API_URL": api,
                # the worker's and its flow runs' credential (they inherit its environment)
                CLIENT_AUTH_ENV: auth_string(),
                **source_api_env(ports),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # a restarting server (a supervisor bringing it back) must not fail the runs in
                # flight: their client retries a lost connection with backoff, twice Prefect's
                # default number of times, enough for a restart on a busy machine
                "PREFECT_CLIENT_MAX_RETRIES": "10",
                **levers.worker_env(),  # its poll for scheduled runs
            },
        )
    )  # fmt: skip
    return Topology(NAME, services)


def _token() -> str:
    return os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN


def prefect_database_url() -> str:
    """Prefect's database on the shared PostgreSQL, as an asyncpg URL, ``pg_trgm`` created."""
    import psycopg2

    from lab import postgres

    url = postgres.database_url(NAME)
    with contextlib.closing(psycopg2.connect(url, connect_timeout=10)) as con:
        con.autocommit = True
        with con.cursor() as cur:  # trusted on PostgreSQL 15: the database owner may create it
            cur.execute("create extension if not exists pg_trgm")
    scheme, rest = url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme.startswith("postgres") else url


# ------------------------------------------------------------------ verbs


def up() -> None:
    policy = kit.policy()
    started = time.monotonic()
    top = topology(prefect_database_url())
    top.up(policy.healthy_timeout_seconds, log=lambda m: print(m, flush=True))
    _use_server()
    register()
    progress.say(
        NAME,
        f"up in {time.monotonic() - started:.1f}s: UI {api_url().removesuffix('/api')}, "
        f"pool {POOL}, deployments registered",
    )


def _use_server() -> None:
    """This process's Prefect talks to the deployed server, signed in (call before importing
    Prefect: it reads its settings once)."""
    os.environ["PREFECT_HOME"] = str(home())
    os.environ[CLIENT_AUTH_ENV] = auth_string()
    configure(api_url())


def register() -> None:
    """Secret block, concurrency limit, deployments on the pool, the crash automation."""
    from orchestrators.prefect.deployments import deployments, provision

    provision(_token())
    env = {
        **source_api_env(_ports(create=False) or {}),
        # the unit lines `run --deployed` follows are the runs' INFO logs: a PREFECT_LOGGING_LEVEL
        # of WARNING in the environment `up` ran in (the test suite's) would keep them off the API
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    for deployment in deployments():
        deployment.job_variables = {"working_dir": str(settings.REPO_ROOT), "env": env}
        deployment.apply(work_pool_name=POOL)
    _crash_automation()


def _crash_automation() -> None:
    """A quartet flow run whose process died: back to Scheduled once its worker is done with it.

    A flow run whose process died (SIGKILL, OOM, a lost machine) is marked Crashed by its worker,
    and Prefect's flow retries do not apply to a crash. Its ingestion is idempotent (dlt merges
    by key) and dbt rebuilds: running the same flow run again is the recovery.

    The trigger is the worker's ``prefect.worker.executed-flow-run`` event with a non-zero exit
    status, not ``prefect.flow-run.Crashed``: a process worker reports one crash twice (its
    runner, then again when the infrastructure call returns, seconds later: the runner first
    loads the flow for its ``on_crashed`` hooks). Rescheduled on the first report, the run took
    the second one while its new attempt was already running, and was rescheduled again: two
    live attempts of one run. The worker emits ``executed-flow-run`` once per attempt, after both
    reports; the second finds the run already Crashed and Prefect refuses it. A run that ended
    on its own (Completed, Failed, Cancelled) exits with status 0.
    """
    from prefect import get_client
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    from orchestrators.prefect.deployments import TAG

    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(CRASH_AUTOMATION):
            client.delete_automation(existing.id)
    Automation(
        name=CRASH_AUTOMATION,
        description="A quartet flow run whose process died is scheduled again.",
        trigger=EventTrigger(
            expect={"prefect.worker.executed-flow-run"},
            match_related=[
                # the flow run, as the worker saw its process end: not with status 0
                {"prefect.resource.role": "flow-run", "prefect.infrastructure.status-code": "!0"},
                {"prefect.resource.id": f"prefect.tag.{TAG}"},
            ],
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            # the action's flow run is the event's related flow-run resource
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="rescheduled after a crash by the automation " + CRASH_AUTOMATION,
            )
        ],
    ).create()


def down() -> None:
    topology().down(log=lambda m: print(m, flush=True))


def status() -> dict:
    return topology().status()


def _require_up() -> None:
    state = status()
    if not state or not all(s["ready"] for s in state.values()):
        down_ones = [n for n, s in state.items() if not s["ready"]] or ["all"]
        raise NotDeployed(
            f"prefect's deployed mode is not up ({', '.join(down_ones)} not healthy): "
            "run `quartet up prefect`"
        )


def deployment_for(request: RunRequest) -> tuple[str, dict]:
    """Which deployment a request goes to, with its parameters: a contiguous range of several
    partitions (months or days) is one backfill run; anything else is the full pipeline (the
    only deployment of runs for a project without partitions, whose requests name none)."""
    keys = sorted(request.partitions)  # YYYY-MM and YYYY-MM-DD sort as the dates they name
    partitions = project.current().partitions
    if len(keys) > 1 and all(partitions.next(a) == b for a, b in itertools.pairwise(keys)):
        params = {"start": keys[0], "end": keys[-1], "as_of": request.as_of}
        return "quartet-backfill/backfill", params
    return "quartet-pipeline/full", {
        "as_of": request.as_of,
        "partitions": list(request.partitions) or None,
    }


def submit(request: RunRequest) -> None:
    _require_up()
    _use_server()
    from prefect.deployments import run_deployment

    name, parameters = deployment_for(request)
    started = time.monotonic()
    flow_run = run_deployment(name, parameters=parameters, timeout=0, as_subflow=False)
    ui = api_url().removesuffix("/api")
    progress.say(NAME, f"submitted {name} ({request.label}): {ui}/runs/flow-run/{flow_run.id}")
    state = follow(flow_run.id)
    seconds = time.monotonic() - started
    if not state.is_completed():
        raise RunFailed(
            f"flow run {flow_run.id} of {name} ended {state.type.value}: {state.message} "
            f"(logs: {ui}/runs/flow-run/{flow_run.id}, worker log {kit.log_dir(NAME)}/worker.log)"
        )
    progress.say(NAME, f"run {flow_run.id} succeeded in {seconds:.1f}s")


def follow(flow_run_id, *, say=print):
    """Poll the flow run until it is final, printing the unit lines of it and its subflows.

    A crashed run that the crash automation puts back to Scheduled is followed on: only a final
    state that stays final ends the wait.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
    )
    from prefect.client.schemas.sorting import FlowRunSort, LogSort

    poll = kit.policy().follow_poll_seconds
    printed: set = set()
    after = None
    final_since = None
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            ids = [run.id, *(c.id for c in children)]
            while True:  # every log written so far, a page at a time
                log_filter = {"flow_run_id": {"any_": ids}}
                if after is not None:
                    log_filter["timestamp"] = {"after_": after}
                page = client.read_logs(
                    log_filter=LogFilter(**log_filter),
                    sort=LogSort.TIMESTAMP_ASC,
                    limit=200,
                    offset=0,
                )
                for entry in page:
                    after = entry.timestamp
                    if entry.id not in printed and entry.message.startswith(UNIT_LINES):
                        printed.add(entry.id)
                        say(entry.message)
                if len(page) < 200:
                    break
            if run.state and run.state.is_final():
                # a crash is followed by the automation's reschedule: give it time to act
                if not run.state.is_crashed():
                    return run.state
                final_since = final_since or time.monotonic()
                if time.monotonic() - final_since > kit.policy().heartbeat_seconds:
                    return run.state
            else:
                final_since = None
            time.sleep(poll)
