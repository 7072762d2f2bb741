"""Deployed mode: Airflow as its production deployment runs it, as separate local processes.

``up`` starts, in its own AIRFLOW_HOME (``.quartet/airflow/deployed``) with its metadata on the
shared PostgreSQL server: the demo source API (for a project that runs it, unless SOURCE_API_URL
points at one), ``airflow api-server``, ``dag-processor``, ``scheduler`` (LocalExecutor, two
slots) and ``triggerer`` (the last two without their log server: every service shares the home's
log folder). It migrates the metadata DB on first use, creates the writer pool through the REST
API and returns once every service reports healthy and the DAGs are parsed. ``submit`` triggers
runs through the REST API v2 (a JWT from ``POST /auth/token``) and follows them until they end;
several consecutive partitions go as one backfill (``POST /api/v2/backfills``), which the
scheduler runs on the pipeline's timetable (each run's data interval is its partition).
Schedules, the source-watch sensor, retries and the detection of a dead worker (its heartbeat
stops) all happen inside the scheduler, not in this process.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core import kit, project, settings
from core.kit import RunFailed, RunRequest, Service, Topology, progress
from core.net import free_port
from orchestrators.airflow import NAME, PIPELINE_DAG, WAREHOUSE_POOL, levers
from orchestrators.airflow.harness import environment
from orchestrators.airflow.harness.environment import USER, Ports

FINISHED = {"success", "failed"}
TASK_DONE = {"success", "failed", "upstream_failed", "skipped", "removed"}


def home() -> Path:
    return environment.deployed_home()


def chosen_ports() -> dict[str, int]:
    """The ports of this deployment, chosen free on the first ``up`` and kept afterwards."""
    path = home() / "ports.json"
    if not path.exists():
        chosen = {"api": free_port(8280), "source_api": free_port(8281)}
        path.write_text(json.dumps(chosen))
    return json.loads(path.read_text())


def ports() -> Ports:
    return Ports(api=chosen_ports()["api"])


def source_api_token() -> str:
    """SOURCE_API_TOKEN when set, else a secret generated once for this deployment."""
    return os.environ.get(settings.SOURCE_API_TOKEN_ENV) or environment.secret(
        home(), "source_api_token"
    )


def source_api_url() -> str:
    return (
        os.environ.get(settings.SOURCE_API_URL_ENV)
        or f"http://127.0.0.1:{chosen_ports()['source_api']}"
    )


def metadata_url() -> str:
    """The metadata DB on the shared PostgreSQL server, as SQLAlchemy's psycopg2 URL."""
    from lab.postgres import database_url

    url = database_url(NAME)
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def deployed_env(sql_alchemy_conn: str | None = None) -> dict[str, str]:
    """Everything the services of this deployment share (the same for every one of them)."""
    from orchestrators.airflow.tasks import checked

    heartbeat = int(checked(kit.policy()).heartbeat_seconds)
    return {
        **environment.service_env(home(), ports(), sql_alchemy_conn or metadata_url()),
        **source_api_env(),
        # a task whose process died stops heartbeating: failed (then retried) after this long
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": str(max(heartbeat // 6, 1)),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # a scheduler only fails the silent tasks it queued itself: the tasks of a killed
        # scheduler are reset (and run again) by its successor's orphaned-task check, which
        # runs at its start (too early: the dead scheduler's heartbeat is still recent) and
        # then every 300 s by default; as often as a task's heartbeat timeout instead
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": str(heartbeat),
        # a task's execution-API token outlives the longest task: once expired, refreshing it
        # can fail under the LocalExecutor (apache/airflow#67939) and the task is killed
        "AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME": "3600",
        # a task's calls to the execution API wait this long for a busy api-server
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        **levers.scheduler_env(),
        "QUARTET_LOCK_TIMEOUT": os.environ.get("QUARTET_LOCK_TIMEOUT", "60"),
    }


def source_api_env() -> dict[str, str]:
    """The demo API's URL and token as an Airflow connection from the environment: the token is
    the connection's password (masked in task logs) and never written to the metadata DB. None
    for a project whose source is not the demo API."""
    if not project.current().demo_api:
        return {}
    return {
        environment.SOURCE_API_CONN_ENV: json.dumps(
            {"conn_type": "http", "host": source_api_url(), "password": source_api_token()}
        )
    }


def topology(env: dict[str, str] | None = None) -> Topology:
    """The deployment's services. ``env`` is only needed to start them (``down`` and ``status``
    find the running processes from what ``up`` recorded)."""
    env = env or {}
    found: list[Service] = []
    if project.current().demo_api and not os.environ.get(settings.SOURCE_API_URL_ENV):
        port = chosen_ports()["source_api"]
        found.append(
            Service(
                name="source-api",
                argv=[sys.executable, "-m", "source_api", "--port", str(port)],
                log=home() / "logs" / "services" / "source-api.log",
                ready=f"http://127.0.0.1:{port}/v1/status",  # 401 without a token: it is up
                env={settings.SOURCE_API_TOKEN_ENV: source_api_token()} if env else {},
            )
        )
    return Topology(NAME, [*found, *environment.services(home(), env, ports())])


# -- the REST API -----------------------------------------------------------------------------
@dataclass
class Api:
    url: str
    token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None, *, attempts: int = 1):
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
        )
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    text = response.read().decode()
                return json.loads(text) if text else {}
            except urllib.error.HTTPError:
                raise
            except OSError:  # a busy api-server (one worker) may be slow to answer: ask again
                if attempt + 1 == attempts:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def get(self, path: str):
        return self.call("GET", path, attempts=5)


def api() -> Api:
    """The REST API with a JWT from ``POST /auth/token`` (the simple auth manager's admin)."""
    url = f"http://127.0.0.1:{ports().api}"
    try:
        answer = Api(url).call(
            "POST", "/auth/token", {"username": USER, "password": environment.password(home())}
        )
    except OSError as exc:
        raise kit.NotDeployed(
            f"the Airflow api-server at {url} does not answer ({exc}); start it: quartet up airflow"
        ) from None
    return Api(url, answer["access_token"])


def prepare(client: Api) -> None:
    """The writer pool sized for the warehouse, and the DAGs parsed (the dag-processor's first
    pass)."""
    pool = {**environment.writer_pool(), "include_deferred": False}
    try:
        client.call("POST", "/api/v2/pools", pool)
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise
        # already there, maybe sized for the warehouse an earlier `up` was started with (a
        # pool's PATCH body is validated as a whole pool: every field, not only the changed)
        client.call("PATCH", f"/api/v2/pools/{WAREHOUSE_POOL}", pool)
    kit.wait_until(
        lambda: client.get(f"/api/v2/dags/{PIPELINE_DAG}")["dag_id"] == PIPELINE_DAG,
        what=f"DAG {PIPELINE_DAG} parsed by the dag-processor (log: {home() / 'logs'})",
        timeout=kit.policy().healthy_timeout_seconds,
        interval=1,
    )


# -- the kit's verbs --------------------------------------------------------------------------
def up() -> None:
    from core.dbt import prepare_manifest

    prepare_manifest()  # here, not inside the DAG file's import under Airflow's timeout
    env = deployed_env()
    environment.migrate(env, home())
    services = topology(env)
    services.up(kit.policy().healthy_timeout_seconds, log=say)
    try:
        prepare(api())
    except BaseException:
        services.down(log=say)  # a failed `up` leaves nothing running
        raise
    url = f"http://127.0.0.1:{ports().api}"
    progress.say(
        NAME,
        f"UI {url}/dags/{PIPELINE_DAG} (user {USER}, password in "
        f"{environment.passwords_file(home())}); metadata: PostgreSQL database {NAME}",
    )


def say(line: str) -> None:
    progress.say(NAME, line.split("] ", 1)[-1])


def down() -> None:
    topology().down(log=say)


def status() -> dict:
    return topology().status()


def span(request: RunRequest) -> list[str] | None:
    """The partitions asked for when they are two or more consecutive ones: one backfill."""
    if len(request.partitions) < 2:
        return None
    keys = project.current().partitions.keys()
    first, last = min(request.partitions), max(request.partitions)
    consecutive = keys[keys.index(first) : keys.index(last) + 1]
    return consecutive if sorted(request.partitions) == consecutive else None


def trigger(client: Api, conf: dict) -> str:
    run = client.call(
        "POST", f"/api/v2/dags/{PIPELINE_DAG}/dagRuns", {"logical_date": None, "conf": conf}
    )
    return run["dag_run_id"]


def backfill(client: Api, partitions: list[str], as_of: str | None) -> list[str]:
    """One run per partition, in order, through Airflow's backfill API; the scheduler creates
    them on the DAG's timetable (each partition's data interval)."""
    from orchestrators.airflow.tasks import partition_start

    first, last = partitions[0], partitions[-1]
    start, end = (f"{partition_start(key):%Y-%m-%dT%H:%M:%SZ}" for key in (first, last))
    created = client.call(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": PIPELINE_DAG,
            "from_date": start,
            "to_date": end,
            "reprocess_behavior": "completed",
            "max_active_runs": 1,
            # each run's partition is its data interval's: only the clock is passed
            "dag_run_conf": {"as_of": as_of} if project.current().clock else {},
        },
    )
    progress.say(NAME, f"backfill {created['id']}: {first}..{last}")
    expected = len(partitions)

    def runs() -> list[dict]:
        found = client.get(
            f"/api/v2/dags/{PIPELINE_DAG}/dagRuns?run_type=backfill&logical_date_gte={start}"
            f"&logical_date_lte={end}&order_by=logical_date&limit=100"
        )["dag_runs"]
        return [r for r in found if r.get("backfill_id") in (None, created["id"])]

    kit.wait_until(
        lambda: len(runs()) >= expected,
        what=f"backfill {created['id']} creating its runs",
        timeout=kit.policy().healthy_timeout_seconds,
        interval=1,
    )
    return [r["dag_run_id"] for r in runs()]


def loaded_rows(client: Api, task_path: str) -> str:
    """``+N rows`` from what an ingestion task returned (its XCom), or nothing."""
    try:
        value = client.get(f"{task_path}/xcomEntries/return_value")["value"]
        if isinstance(value, str):
            value = json.loads(value)
        return progress.rows(int(value["new"]), new=True)
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def follow(client: Api, run_id: str, dag_id: str = PIPELINE_DAG) -> dict:
    """Poll the run until it ends, printing one line per task as it finishes; returns the run."""
    quoted = urllib.request.quote(run_id, safe="")
    base = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}"
    reported: set[tuple[str, int]] = set()
    from core.lineage import canonical
    from orchestrators.airflow.harness.run import SOURCE_TESTS, source_tests, unit_of

    #: a model's task runs the dbt tests attached to it (canonical rule of core.lineage); its
    #: success means they all passed
    tests = canonical().tests

    while True:
        run = client.get(base)
        tasks = client.get(f"{base}/taskInstances?limit=200")["task_instances"]
        for ti in sorted(tasks, key=lambda t: t.get("end_date") or ""):
            key = (ti["task_id"], ti["try_number"])
            if ti["state"] in TASK_DONE and key not in reported:
                reported.add(key)
                kind, unit = unit_of(ti["task_id"])
                detail = "" if ti["state"] == "success" else ti["state"].upper()
                if kind == "ingest" and ti["state"] == "success":
                    detail = loaded_rows(client, f"{base}/taskInstances/{ti['task_id']}")
                if kind == "dbt" and ti["state"] == "success":
                    detail = progress.tests_summary(len(tests.get(unit, ())))
                if kind == "test" and unit == SOURCE_TESTS and ti["state"] == "success":
                    detail = progress.tests_summary(source_tests(tests))
                if ti["try_number"] > 1:
                    detail = f"{detail} (try {ti['try_number']})".strip()
                print(
                    progress.unit_line(NAME, kind, unit, ti.get("duration") or 0.0, detail),
                    flush=True,
                )
            elif (
                ti["state"] == "up_for_retry" and (ti["task_id"], -ti["try_number"]) not in reported
            ):
                reported.add((ti["task_id"], -ti["try_number"]))
                kind, unit = unit_of(ti["task_id"])
                print(
                    progress.unit_line(
                        NAME,
                        kind,
                        unit,
                        ti.get("duration") or 0.0,
                        f"failed, retrying (try {ti['try_number']})",
                    ),
                    flush=True,
                )
        if run["state"] in FINISHED:
            run["task_instances"] = tasks
            return run
        time.sleep(kit.policy().follow_poll_seconds)


def submit(request: RunRequest) -> None:
    """Runs triggered through the REST API and followed to their end; raises unless all succeed."""
    from orchestrators.airflow.tasks import run_conf

    client = api()
    client.call("PATCH", f"/api/v2/dags/{PIPELINE_DAG}", {"is_paused": False})
    partitions = span(request)
    if partitions:
        run_ids = backfill(client, partitions, request.as_of)
    else:
        run_ids = [
            trigger(client, run_conf(as_of=request.as_of, partition=partition))
            for partition in request.partitions or (None,)
        ]
    url = f"http://127.0.0.1:{ports().api}/dags/{PIPELINE_DAG}/runs"
    for run_id in run_ids:
        started = time.monotonic()
        progress.say(NAME, f"run {run_id} submitted ({request.label})")
        run = follow(client, run_id)
        if run["state"] != "success":
            failed = [
                f"{ti['task_id']}: {ti['state']}"
                for ti in run["task_instances"]
                if ti["state"] not in ("success", "skipped")
            ]
            raise RunFailed(
                f"{PIPELINE_DAG} run {run_id} {run['state']}: {', '.join(failed)}; "
                f"task logs: {url}/{urllib.request.quote(run_id, safe='')}"
            )
        progress.say(
            NAME,
            f"run {run_id} succeeded in {time.monotonic() - started:.1f}s; its task logs: "
            f"{home() / 'logs' / f'dag_id={PIPELINE_DAG}' / f'run_id={run_id}'}",
        )
    from orchestrators.airflow.harness.run import shown

    progress.say(NAME, f"done -> {shown(settings.for_pipeline(NAME).location)}")
