"""Deployed mode: Dagster as its production deployment runs it, as separate local processes.

* ``code-server``: the code location as its own gRPC server (``dagster api grpc -m
  orchestrators.dagster.definitions``); runs are launched into it (DefaultRunLauncher: each run
  is a subprocess of the code server, the run worker).
* ``webserver``: ``dagster-webserver -w workspace.yaml``: the UI and the GraphQL API runs are
  submitted through.
* ``daemon``: one ``dagster-daemon run``: the queued run coordinator (pool limits), schedules,
  sensors, run monitoring and run retries.
* ``source-api``: the bundled demo API the runs load from, for a project that runs it (unless
  SOURCE_API_URL names another API); a project whose source finds its data itself has none.

DAGSTER_HOME is ``.quartet/dagster/deployed/`` (apart from the dev-mode home); its dagster.yaml
keeps runs, event logs and schedules on PostgreSQL (dagster-postgres), the URL passed to every
service as DAGSTER_POSTGRES_URL. The source API token reaches the services as SOURCE_API_TOKEN and
the runs through ``EnvVar``: it is never in run config, the event log or the UI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg

from core import kit, settings
from core.kit import NotDeployed, RunFailed, RunRequest, progress
from core.net import free_port
from orchestrators.dagster import levers
from orchestrators.dagster.partitions import WHOLE_RANGE
from orchestrators.dagster.project import (
    CONFIG,
    NAME,
    POLICY,
    PROJECT,
    WAREHOUSE_POOL,
    WAREHOUSE_POOL_LIMIT,
)

JOB = "full_pipeline"
LOCATION = "quartet"
POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"
#: the environment variable names every service gets (docker/dagster/compose.yaml sets the same)
SERVICE_ENV = (
    "DAGSTER_HOME",
    POSTGRES_URL_ENV,
    settings.SOURCE_API_URL_ENV,
    settings.SOURCE_API_TOKEN_ENV,
)
#: run monitoring's poll interval (seconds, whole: policy.py): how soon a dead run's pool slot
#: comes back, how soon a run stuck STARTING is failed
MONITOR_POLL_SECONDS = int(POLICY.follow_poll_seconds)
#: a run whose worker was lost is retried from failure, up to unit_retries times: the unit it
#: was running is what starts again (ADR 0013)
RETRY_TAGS = {
    "dagster/max_retries": str(POLICY.unit_retries),
    "dagster/retry_strategy": "FROM_FAILURE",  # re-execute what failed or did not run
}
BIN = Path(sys.executable).parent


def home() -> Path:
    path = settings.orchestrator_dir(NAME) / "deployed"
    path.mkdir(parents=True, exist_ok=True)
    return path


def instance_yaml() -> str:
    """The deployed instance: Postgres storage, queued runs, the warehouse pool, monitoring."""
    dequeue = levers.dequeue_interval_seconds(POLICY.follow_poll_seconds)
    coordinator_config = (
        f"""
  config:
    dequeue_interval_seconds: {dequeue}  # levers.py: Dagster's default 5"""
        if dequeue
        else ""
    )
    return f"""\
# Written by `quartet up dagster` (orchestrators/dagster/harness/deploy.py); generated state, gitignored.
telemetry:
  enabled: false
nux:
  enabled: false  # no "Join the Dagster community" dialog over the UI
storage:
  postgres:
    postgres_url:
      env: {POSTGRES_URL_ENV}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator{coordinator_config}
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
concurrency:
  runs:
    max_concurrent_runs: 4
  pools:
    default_limit: {WAREHOUSE_POOL_LIMIT}  # {WAREHOUSE_POOL}: 1 on DuckDB, every unit on PostgreSQL
run_monitoring:
  enabled: true
  start_timeout_seconds: {round(POLICY.healthy_timeout_seconds)}
  poll_interval_seconds: {MONITOR_POLL_SECONDS}
  max_resume_run_attempts: 0  # the DefaultRunLauncher cannot resume a run in a new worker
  free_slots_after_run_end_seconds: {MONITOR_POLL_SECONDS}  # a dead run's pool slot comes back
run_retries:
  enabled: true
  max_retries: {POLICY.unit_retries}
  retry_on_asset_or_op_failure: false  # a lost worker is retried; a failing dbt test is not
"""


def workspace_yaml(grpc_port: int, host: str = "127.0.0.1") -> str:
    return f"""\
# Written by `quartet up dagster`: the code location is its own gRPC server.
load_from:
  - grpc_server:
      host: {host}
      port: {grpc_port}
      location_name: {LOCATION}
"""


# ------------------------------------------------------------------------------- settings


def _state_file() -> Path:
    return home() / "deployment.json"


def _deployment(create: bool) -> dict:
    """Ports and URLs of this deployment, chosen on the first ``up`` and kept until ``down``."""
    path = _state_file()
    if path.exists():
        return json.loads(path.read_text())
    if not create:
        raise NotDeployed("dagster is not up: start it with `quartet up dagster`")
    from lab import postgres

    state = {
        "grpc_port": free_port(4266),
        "web_port": free_port(3070),
        "postgres_url": sqlalchemy_url(postgres.database_url(NAME)),
        "source_api_url": os.environ.get(settings.SOURCE_API_URL_ENV) or "",
    }
    if not state["source_api_url"] and PROJECT.demo_api:
        state["source_api_port"] = free_port(8790)
        state["source_api_url"] = f"http://127.0.0.1:{state['source_api_port']}"
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)  # the Postgres URL may carry a password
    return state


def sqlalchemy_url(url: str) -> str:
    """dagster-postgres hands the URL to SQLAlchemy: name the driver installed (psycopg2), and
    give Dagster's sessions the options of ``levers.postgres_session_options``."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgres", "postgresql"):
        return url
    options = levers.postgres_session_options()
    if not options:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql+psycopg2://{rest}{'&' if '?' in rest else '?'}options={options}"


def service_env(state: dict) -> dict[str, str]:
    token = os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN
    return {
        "DAGSTER_HOME": str(home()),
        POSTGRES_URL_ENV: state["postgres_url"],
        settings.SOURCE_API_URL_ENV: state["source_api_url"],
        settings.SOURCE_API_TOKEN_ENV: token,
        "QUARTET_HOME": str(settings.home()),
    }


def _port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return check


def web_url(state: dict) -> str:
    return f"http://127.0.0.1:{state['web_port']}"


def topology(state: dict) -> kit.Topology:
    logs = kit.log_dir(NAME)
    env = service_env(state)
    workspace = home() / "workspace.yaml"
    services = []
    if "source_api_port" in state:
        api = dataclasses.replace(kit.source_api_config(), as_of=CONFIG.as_of)
        argv = api.argv(state["source_api_port"])  # (the token comes from the env)
        services.append(
            kit.Service(
                name="source-api",
                argv=[
                    sys.executable,
                    "-m",
                    "source_api",
                    *argv,
                ],
                log=logs / "source-api.log",
                ready=f"{state['source_api_url']}/health",
                url=state["source_api_url"],
                env=env,
            )
        )
    services += [
        kit.Service(
            name="code-server",
            argv=[
                str(BIN / "dagster"),
                *("api", "grpc", "-m", "orchestrators.dagster.definitions"),
                *("-h", "127.0.0.1", "-p", str(state["grpc_port"])),
            ],
            log=logs / "code-server.log",
            ready=_port_open(state["grpc_port"]),
            url=f"grpc://127.0.0.1:{state['grpc_port']}",
            env=env,
        ),
        kit.Service(
            name="webserver",
            argv=[
                str(BIN / "dagster-webserver"),
                *("-h", "127.0.0.1", "-p", str(state["web_port"]), "-w", str(workspace)),
            ],
            log=logs / "webserver.log",
            ready=f"{web_url(state)}/server_info",
            env=env,
        ),
        kit.Service(
            name="daemon",
            argv=[str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            log=logs / "daemon.log",
            ready=lambda: daemons_healthy(state),
            env=env,
        ),
    ]
    return kit.Topology(NAME, services)


def graphql(state: dict, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    import urllib.request

    request = urllib.request.Request(
        f"{web_url(state)}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.load(response)
    if answer.get("errors"):
        raise RunFailed(f"Dagster's GraphQL API answered: {answer['errors'][0]['message']}")
    return answer["data"]


DAEMONS_QUERY = """{ instance { daemonHealth { allDaemonStatuses {
  daemonType healthy required } } } }"""


def daemons_healthy(state: dict) -> bool:
    statuses = graphql(state, DAEMONS_QUERY, timeout=5)["instance"]["daemonHealth"]
    required = [s for s in statuses["allDaemonStatuses"] if s["required"]]
    return bool(required) and all(s["healthy"] for s in required)


# ------------------------------------------------------------------------------- verbs


def up() -> None:
    """Start what is not running; return when every service answers (idempotent)."""
    state = _deployment(create=True)
    (home() / "dagster.yaml").write_text(instance_yaml())
    (home() / "workspace.yaml").write_text(workspace_yaml(state["grpc_port"]))
    from lab import postgres

    topology(state).up(POLICY.healthy_timeout_seconds)
    start_automation(state)
    from orchestrators.dagster.harness.run import release_dead_runs

    with deployed_instance(state) as instance:  # runs a stopped code server took with it
        release_dead_runs(instance, lambda m: progress.say(NAME, m))
    progress.say(NAME, f"UI and GraphQL API: {web_url(state)}")
    progress.say(NAME, f"metadata: {postgres.mask(state['postgres_url'])}; DAGSTER_HOME={home()}")


START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message }
  }
}"""
START_SCHEDULE = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""


def _repository() -> dict:
    from orchestrators.dagster.definitions import defs

    return {"repositoryLocationName": LOCATION, "repositoryName": defs.get_repository_def().name}


def start_automation(state: dict) -> None:
    """Turn on the schedule and the freshness sensor (where the project has a probe): from now
    on the daemon runs them."""
    from orchestrators.dagster.automation import freshness_sensors, full_pipeline_schedule

    started = [
        *((START_SENSOR, {**_repository(), "sensorName": s.name}) for s in freshness_sensors),
        (START_SCHEDULE, {**_repository(), "scheduleName": full_pipeline_schedule.name}),
    ]
    for mutation, selector in started:
        answer = graphql(state, mutation, {"selector": selector})
        result = next(iter(answer.values()))
        already = "already running" in str(result.get("message", ""))
        if result["__typename"] == "PythonError" and not already:
            raise RunFailed(f"Dagster could not start {selector}: {result['message']}")
    sensors = "".join(f"sensor {s.name}, " for s in freshness_sensors)
    progress.say(NAME, f"daemon runs: {sensors}schedule {full_pipeline_schedule.name}")


def down() -> None:
    try:
        state = _deployment(create=False)
    except NotDeployed:
        progress.say(NAME, "nothing to stop")
        return
    stopped = topology(state).down()
    _state_file().unlink(missing_ok=True)
    if not stopped:
        progress.say(NAME, "nothing was running")


def status() -> dict:
    try:
        return topology(_deployment(create=False)).status()
    except NotDeployed:
        return {}


def _running_state() -> dict:
    state = _deployment(create=False)
    services = topology(state).status()
    down_ = [name for name, s in services.items() if not s["ready"]]
    if down_:
        raise NotDeployed(
            f"dagster services not healthy: {', '.join(down_)} (`quartet status dagster`; "
            "`quartet up dagster` starts them)"
        )
    return state


def client(state: dict):
    from dagster_graphql import DagsterGraphQLClient

    return DagsterGraphQLClient("127.0.0.1", port_number=state["web_port"])


def deployed_instance(state: dict) -> dg.DagsterInstance:
    """The deployed instance, read by this process (the event log a run's progress comes from)."""
    os.environ[POSTGRES_URL_ENV] = state["postgres_url"]
    return dg.DagsterInstance.from_config(str(home()))


def submit_run(state: dict, as_of: str | None, partitions: Iterable[str] = ()) -> str:
    """One run of ``full_pipeline`` through the GraphQL API; returns its run id."""
    from orchestrators.dagster.automation import as_of_config
    from orchestrators.dagster.harness.run import partition_tags

    return client(state).submit_job_execution(
        JOB,
        repository_location_name=LOCATION,
        run_config=as_of_config(as_of),
        tags={**partition_tags(partitions), **RETRY_TAGS},
    )


BACKFILL_MUTATION = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on UnauthorizedError { message }
  }
}"""

BACKFILL_QUERY = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions runs(limit: 100) { runId status tags { key value } } }
    ... on PythonError { message }
  }
}"""


def submit_backfill(state: dict, as_of: str | None, partitions: Iterable[str]) -> str:
    """A backfill of the partitions through ``launchPartitionBackfill`` (one run for them all:
    the assets' ``BackfillPolicy.single_run``)."""
    from orchestrators.dagster.automation import as_of_config
    from orchestrators.dagster.definitions import defs

    repository = defs.get_repository_def().name
    params = {
        "selector": {
            "partitionSetName": f"{JOB}_partition_set",
            "repositorySelector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": repository,
            },
        },
        "partitionNames": list(partitions),
        "runConfigData": as_of_config(as_of),
        "tags": [{"key": k, "value": v} for k, v in RETRY_TAGS.items()],
        "title": f"quartet run dagster --deployed ({', '.join(partitions)})",
    }
    answer = graphql(state, BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise RunFailed(f"Dagster refused the backfill: {answer}")
    return answer["backfillId"]


def backfill_runs(state: dict, backfill_id: str) -> tuple[str, list[dict]]:
    answer = graphql(state, BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    return answer["status"], answer.get("runs") or []


def follow(
    state: dict,
    instance: dg.DagsterInstance,
    run_id: str,
    say: Callable[[str], None],
    timeout: float | None = None,
) -> dg.DagsterRun:
    """Follow a run (and the retries Dagster starts for it) until it succeeds; raise if not.

    Prints one line per unit from the run's event log. When the run fails and Dagster will
    retry it (``dagster/will_retry``: a lost run worker), follows the retry run.
    """
    from orchestrators.dagster.definitions import defs
    from orchestrators.dagster.harness.run import (
        Progress,
        checks_per_asset,
        failure_summary,
        log_event,
    )

    gql = client(state)
    job = defs.resolve_job_def(JOB)
    deadline = None if timeout is None else time.monotonic() + timeout
    current, cursor = run_id, None
    printer = Progress(checks_per_asset(job), say)
    while True:
        status = gql.get_run_status(current)
        records = instance.get_records_for_run(current, cursor=cursor, limit=1000)
        for record in records.records:
            log_event(record.event_log_entry)  # the run's event log, also in the log file
            printer(record.event_log_entry)
        cursor = records.cursor
        if records.has_more:
            continue
        if status == dg.DagsterRunStatus.SUCCESS:
            return instance.get_run_by_id(current)
        if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            run = instance.get_run_by_id(current)
            retry = _retry_of(instance, run)
            if retry is None:
                events = [
                    r.event_log_entry.dagster_event
                    for r in instance.get_records_for_run(current).records
                    if r.event_log_entry.dagster_event
                ]
                raise RunFailed(
                    f"run {current} {status.value.lower()}:\n{failure_summary(events)}\n"
                    f"see {web_url(state)}/runs/{current}"
                )
            progress.say(
                NAME,
                f"run {current} failed ({_crash(instance, current)}); Dagster "
                f"retries it as run {retry.run_id}",
            )
            current, cursor = retry.run_id, None
            printer = Progress(checks_per_asset(job), say)
            continue
        if deadline is not None and time.monotonic() > deadline:
            raise RunFailed(f"run {current} still {status.value} after {timeout:.0f}s")
        time.sleep(POLICY.follow_poll_seconds)


def _crash(instance: dg.DagsterInstance, run_id: str) -> str:
    for record in reversed(instance.get_records_for_run(run_id).records):
        event = record.event_log_entry.dagster_event
        message = (event.message if event else None) or record.event_log_entry.user_message or ""
        if "Run execution process" in message or "terminated" in message:
            return message.splitlines()[0]
    return "see its event log"


def _retry_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun | None:
    """The retry run Dagster's daemon starts for ``run`` (waits for it while it is promised)."""
    deadline = time.monotonic() + POLICY.healthy_timeout_seconds
    while time.monotonic() < deadline:
        children = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id})
        )
        if children:
            return children[0]
        run = instance.get_run_by_id(run.run_id)
        if run.tags.get("dagster/will_retry") == "false":
            return None
        if "dagster/will_retry" not in run.tags and _retries_left(instance, run) == 0:
            return None
        time.sleep(POLICY.follow_poll_seconds)
    return None


def _retries_left(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int:
    root = run.tags.get("dagster/root_run_id", run.run_id)
    done = len(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/root_run_id": root})))
    return max(0, int(run.tags.get("dagster/max_retries", 0)) - done)


def submit(request: RunRequest) -> None:
    """``quartet run dagster --deployed``: submit through the GraphQL API, follow, succeed."""
    from orchestrators.dagster.harness.run import CHATTY_LOGGERS

    state = _running_state()
    say = lambda line: print(line, flush=True)  # noqa: E731
    log = progress.orchestrator_log(NAME, CHATTY_LOGGERS)
    # the partitions named, or the whole range as this project has it (none: everything new)
    label = ", ".join(request.partitions) or WHOLE_RANGE
    label += f" as of {request.as_of}" if request.as_of else ""
    with deployed_instance(state) as instance:
        started = time.monotonic()
        if len(request.partitions) > 1:
            backfill_id = submit_backfill(state, request.as_of, request.partitions)
            progress.say(
                NAME, f"backfill {backfill_id} ({label}): {web_url(state)}/runs/b/{backfill_id}"
            )
            for run_id in _backfill_run_ids(state, backfill_id, len(request.partitions)):
                follow(state, instance, run_id, say)
        else:
            run_id = submit_run(state, request.as_of, request.partitions)
            progress.say(NAME, f"run {run_id} ({label}) submitted: {web_url(state)}/runs/{run_id}")
            follow(state, instance, run_id, say)
    progress.say(
        NAME,
        f"{label} succeeded in {time.monotonic() - started:.1f}s; warehouse: "
        f"{settings.for_pipeline(NAME).warehouse}; the runs' event log: {log} "
        f"(services' logs in {kit.log_dir(NAME)})",
    )


def _backfill_run_ids(state: dict, backfill_id: str, count: int) -> Iterable[str]:
    """The runs of a backfill as the daemon submits them (one for the whole range: the assets'
    BackfillPolicy.single_run), until the backfill has submitted all it will."""
    seen: list[str] = []
    deadline = time.monotonic() + POLICY.healthy_timeout_seconds
    while True:
        status, runs = backfill_runs(state, backfill_id)
        fresh = [
            r["runId"]
            for r in reversed(runs)
            if r["runId"] not in seen
            and not any(t["key"] == "dagster/parent_run_id" for t in r["tags"])  # a retry
        ]
        for run_id in fresh:
            seen.append(run_id)
            deadline = time.monotonic() + POLICY.healthy_timeout_seconds
            yield run_id
        if fresh:
            continue
        if status.startswith("COMPLETED") and seen:
            return
        if status in ("FAILED", "CANCELED") or time.monotonic() > deadline:
            raise RunFailed(f"backfill {backfill_id} {status.lower()} with {len(seen)} runs")
        time.sleep(POLICY.follow_poll_seconds)
