"""Deployed mode: a persistent server and two worker processes, runs submitted through the client.

The topology is started once for this module (``quartet up temporal`` in a home of its own) and
stopped at the end (``quartet down temporal``). The policy's heartbeat timeout is shortened (a
configuration file of the test) so that a lost worker is noticed in seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporal_helpers import activity_runs, texts
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    ScheduleActionExecutionStartWorkflow,
    ScheduleBackfill,
    ScheduleOverlapPolicy,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from core import lineage, settings
from core.source_service import set_clock
from lab.fingerprint import diff, fingerprint
from orchestrators.temporal.harness import deploy
from orchestrators.temporal.harness.run import connect
from orchestrators.temporal.starter import (
    SCHEDULE_ID,
    WATCHER_ID,
    placement,
    start,
    workflow_input,
)
from orchestrators.temporal.workflows import BackfillInput, PipelineWorkflow
from tests.browser import chromium_page, screenshot
from tests.helpers import (
    JANUARY,
    assert_loopback_only,
    assert_same_as_bare,
    assert_token_on_no_command_line,
    expected,
    fresh_warehouse,
    quartet,
    table_rows,
)

HEARTBEAT_SECONDS = 15  # the SDK sends heartbeats at 80% of it: room for a loaded machine
POLL_SECONDS = 2  # the source watcher's poll interval in this module's configuration
UI_WAIT_MS = 60_000  # how long the browser test waits for the UI to show something: a bound


@pytest.fixture(scope="module")
def deployed(quartet_home: Path, source_api, bare_january, tmp_path_factory) -> Iterator[dict]:
    """``quartet up temporal`` in a home of its own; ``quartet down temporal`` at the end."""
    from core import dbt

    home = tmp_path_factory.mktemp("temporal-deployed")
    prepared = dbt.prepare_manifest().parent  # the session's parse: dbt does not parse again
    shutil.copytree(prepared, home / ".quartet" / prepared.name)
    config = home / "ingestion.toml"
    text = settings.INGESTION_CONFIG.read_text()
    text = re.sub(r"(?m)^heartbeat_seconds = .*$", f"heartbeat_seconds = {HEARTBEAT_SECONDS}", text)
    # the watcher `up` starts polls often enough for a test to see it fire
    text = re.sub(r"(?m)^source_poll_seconds = .*$", f"source_poll_seconds = {POLL_SECONDS}", text)
    config.write_text(text)
    saved = {
        k: os.environ.get(k)
        for k in ("QUARTET_HOME", "QUARTET_INGESTION_CONFIG", settings.SOURCE_API_URL_ENV)
    }
    os.environ.update(QUARTET_HOME=str(home), QUARTET_INGESTION_CONFIG=str(config))
    # the deployment starts a source API of its own: the clock tests move it, not the session's
    os.environ[settings.SOURCE_API_URL_ENV] = ""
    started = time.monotonic()
    up = quartet("up", "temporal", timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"home": home, "up": up, "up_seconds": time.monotonic() - started}
    finally:
        address = deploy.address()
        down = quartet("down", "temporal", timeout=120)
        left = json.loads(quartet("status", "temporal", "--json").stdout)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert down.returncode == 0, down.stderr
        assert not any(s["running"] for s in left.values()), left  # no process left behind
        assert not deploy.listens(address)  # and no port


def rss_mb(pid: int) -> int:
    """Resident memory of a process and its children (the dev server has none), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024


def warehouse() -> Path:
    return settings.for_pipeline("temporal").warehouse


def test_up_starts_the_server_and_two_workers_healthy_and_twice_is_harmless(deployed) -> None:
    status = json.loads(quartet("status", "temporal", "--json").stdout)
    assert {"server", "worker-1", "worker-2"} <= set(status)
    assert all(s["ready"] for s in status.values()), status
    # who may look: no login on Temporal's UI or frontend, so every socket of every service
    # (frontend, UI, HTTP API, metrics, the server's internal ports, the source API) is on
    # loopback, and the token is in the workers' environment, on no command line
    pids = [s["pid"] for s in status.values()]
    sockets = assert_loopback_only(*pids)
    ends = deploy.endpoints()
    assert {ends["port"], ends["ui_port"]} <= {port for _, port, _, _ in sockets}, sockets
    token = os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN
    assert_token_on_no_command_line(token, *pids)
    rss = {name: rss_mb(s["pid"]) for name, s in status.items()}
    print(f"up to healthy {deployed['up_seconds']:.1f}s; idle RSS MB {rss}")
    again = quartet("up", "temporal", timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(quartet("status", "temporal", "--json").stdout) == status  # same pids
    assert (deployed["home"] / ".quartet/temporal/deployed/temporal.db").exists()  # persistent

    async def on_the_server():
        client = await connect(deploy.address())
        schedule = await client.get_schedule_handle(SCHEDULE_ID).describe()
        watcher = await client.get_workflow_handle(WATCHER_ID).describe()
        return schedule, watcher

    schedule, watcher = asyncio.run(on_the_server())
    assert schedule.schedule.action.workflow == "PipelineWorkflow"
    assert watcher.status.name == "RUNNING"


def test_deployed_run_is_submitted_followed_and_equals_bare(
    deployed, bare_january, source_api
) -> None:
    run = quartet("run", "temporal", "--deployed", "--as-of", JANUARY, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert_same_as_bare(warehouse(), bare_january)
    lines = [
        line for line in run.stdout.splitlines() if re.match(r"\[temporal\] (ingest|dbt) ", line)
    ]
    assert len(lines) == expected().units, run.stdout
    # one line per unit as it ends: a model after its parents, with its own tests counted
    graph = lineage.canonical()
    shown = {line.split()[2]: (i, line) for i, line in enumerate(lines)}
    for parent, child in graph.edges:
        if parent in shown and child in shown:
            assert shown[parent][0] < shown[child][0], f"{child} printed before {parent}"
    for model in expected().models:
        count = len(graph.tests.get(model, ()))
        assert re.search(rf"\b{count} tests passed", shown[model][1]), shown[model]

    # the token is worker configuration: never in history, the server's database or its log
    async def history() -> tuple[str, list[dict]]:
        client = await connect(deploy.address())
        handle = client.get_workflow_handle(workflow_input_id())
        return (await handle.fetch_history()).to_json(), await activity_runs(handle)

    history_json, runs = asyncio.run(history())
    assert source_api.token not in history_json
    # the same history as anyone on the machine reads it: the UI's HTTP API, no credentials
    ui = deploy.topology().service("server").url
    run_id = runs_run_id()
    url = f"{ui}/api/v1/namespaces/default/workflows/{workflow_input_id()}/history"
    with urllib.request.urlopen(f"{url}?execution.runId={run_id}", timeout=30) as answer:
        strings = texts(json.load(answer))
    assert any("build_model" in s for s in strings), "no activity in the history read"
    assert not [s for s in strings if source_api.token in s]
    # both workers wrote to the warehouse, one at a time (the writer lock): what waiting cost
    writes = sorted(
        (r["started"], r["closed"], r["identity"])
        for r in runs
        if r["type"] in ("ingest_resource", "build_model")
    )
    assert len({identity for *_, identity in writes}) == len(deploy.WORKERS)
    for (_, closed, _), (started, _, _) in itertools.pairwise(writes):
        assert closed <= started, "two warehouse activities of one run wrote at once on DuckDB"
    busy = sum((closed - started).total_seconds() for started, closed, _ in writes)
    span = (writes[-1][1] - writes[0][0]).total_seconds()
    print(f"warehouse activities: {busy:.1f}s of slot time in {span:.1f}s of wall time")
    state = deployed["home"] / ".quartet/temporal"
    for path in [*state.glob("deployed/temporal.db*"), *state.glob("logs/*.log")]:
        assert source_api.token.encode() not in path.read_bytes(), path


def test_deployed_ui_shows_the_client_started_workflow_on_its_timeline(deployed, tmp_path) -> None:
    """The server's own UI, in a real browser, on the Timeline tab of the workflow the client
    started: its id, Completed, and one completed activity per unit of the canonical graph."""
    from playwright.sync_api import expect

    workflow = workflow_input_id()

    async def described():
        client = await connect(deploy.address())
        try:
            return await client.get_workflow_handle(workflow).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return None

    if asyncio.run(described()) is None:  # selected alone: the client's run has not happened yet
        run = quartet("run", "temporal", "--deployed", "--as-of", JANUARY, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    execution = asyncio.run(described())
    assert execution.status == WorkflowExecutionStatus.COMPLETED
    ui = deploy.topology().service("server").url
    # tall enough for the header and every row of the timeline in one screenshot
    with chromium_page(height=1400) as page:
        page.goto(f"{ui}/namespaces/default/workflows/{workflow}/{execution.run_id}/timeline")
        try:  # the screenshot shows what the UI showed, passed or not
            heading = page.get_by_test_id("workflow-id-heading")  # its copy button has a title
            expect(heading.get_by_text(workflow, exact=True)).to_be_visible(timeout=UI_WAIT_MS)
            status = page.get_by_test_id("execution-status")
            expect(status).to_have_text("Completed", timeout=UI_WAIT_MS)
            timeline = page.get_by_role("img", name=f"Workflow {workflow}: Completed")
            expect(timeline).to_be_attached(timeout=UI_WAIT_MS)
            # a row per activity: "Event <type>: <state>", labelled "<type> • <its summary>"
            rows = page.get_by_role(
                "button", name=re.compile(r"^Event (ingest_resource|build_model): Completed$")
            )
            expect(rows).to_have_count(expected().units, timeout=UI_WAIT_MS)
            labels = rows.all_inner_texts()
        finally:
            screenshot(page, "ui-temporal-deployed", tmp_path)
    shown = {
        m.group(1) for m in map(re.compile(r"• (?:ingest|dbt build) (\w+)").search, labels) if m
    }
    assert shown == {*expected().resources, *expected().models}, labels


def runs_run_id() -> str:
    """The run id of the client-started January run."""

    async def describe() -> str:
        client = await connect(deploy.address())
        return (await client.get_workflow_handle(workflow_input_id()).describe()).run_id

    return asyncio.run(describe())


def workflow_input_id() -> str:
    from core.kit import RunRequest
    from orchestrators.temporal.starter import workflow_id

    return workflow_id(workflow_input(RunRequest(name="temporal", as_of=JANUARY)))


async def started_activity(handle, resource: str, timeout: float = 300) -> str:
    """The identity of the worker once the server reports ``ingest <resource>`` started."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for pending in (await handle.describe()).raw_description.pending_activities:
            details = pending.heartbeat_details.payloads  # "loading <resource>"
            if (
                pending.activity_type.name == "ingest_resource"
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and details
                and f"loading {resource}" in details[0].data.decode()
            ):
                return pending.last_worker_identity
        await asyncio.sleep(0.1)
    raise TimeoutError(f"ingest {resource} did not start within {timeout:.0f}s")


def test_worker_killed_while_loading_flights_the_other_worker_finishes(
    deployed, bare_january
) -> None:
    fresh_warehouse("temporal")
    pids = {deploy.topology().service(w).pid for w in deploy.WORKERS}

    async def main():
        client = await connect(deploy.address())
        handle = await start(client, workflow_input_for_kill())
        identity = await started_activity(handle, "flights")
        victim = int(identity.split("@")[0])
        assert victim in pids
        os.kill(victim, signal.SIGKILL)  # a worker this module's `up` started
        killed = time.monotonic()
        await handle.result()
        return victim, time.monotonic() - killed, await activity_runs(handle)

    victim, kill_to_success, runs = asyncio.run(main())
    flights = [r for r in runs if r["type"] == "ingest_resource" and '"flights"' in r["input"]]
    assert flights[-1]["attempt"] > 1 and not flights[-1]["identity"].startswith(f"{victim}@")
    assert_same_as_bare(warehouse(), bare_january)
    print(f"kill-to-success {kill_to_success:.1f}s (heartbeat timeout {HEARTBEAT_SECONDS}s)")
    again = quartet("up", "temporal", timeout=120)  # up restores the fleet: a new worker-N
    assert again.returncode == 0 and all(
        s["ready"] for s in json.loads(quartet("status", "temporal", "--json").stdout).values()
    )


def workflow_input_for_kill():
    from core.kit import RunRequest

    return workflow_input(RunRequest(name="temporal", as_of=JANUARY))


def test_server_stopped_and_restarted_mid_run_resumes_from_its_history(
    deployed, bare_january
) -> None:
    fresh_warehouse("temporal")

    async def started() -> tuple[str, str]:
        client = await connect(deploy.address())
        handle = await start(client, workflow_input_for_kill())
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            if any(p.activity_type.name == "build_model" for p in pending):
                return handle.id, handle.result_run_id

            await asyncio.sleep(0.2)

    workflow_id, run_id = asyncio.run(started())
    deploy.topology().service("server").stop()  # the whole server: frontend, history, UI
    assert not deploy.listens(deploy.address())
    up = quartet("up", "temporal", timeout=180)  # the same database file, the same ports
    assert up.returncode == 0, up.stderr

    async def finished():
        client = await connect(deploy.address())
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        await handle.result()
        return await activity_runs(handle)

    runs = asyncio.run(finished())
    assert [r["type"] for r in runs].count("ingest_resource") == len(expected().resources)
    assert_same_as_bare(warehouse(), bare_january)


def deployed_api() -> tuple[str, str]:
    """The URL and token of the source API `up` started (the topology's ``source-api``)."""
    token = os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN
    return f"http://127.0.0.1:{deploy.endpoints()['api_port']}", token


async def polled_since(client, instant) -> None:
    """Return once the watcher has polled the source after ``instant`` (its own history)."""
    watcher = client.get_workflow_handle(WATCHER_ID)
    while not any(
        r["type"] == "source_status" and r["started"] > instant and "closed" in r
        for r in await activity_runs(watcher)
    ):
        await asyncio.sleep(POLL_SECONDS / 2)


async def result_of(client, workflow: str, timeout: float = 900):
    """The result of ``workflow`` once the server has started it and it has ended."""
    handle = client.get_workflow_handle_for(PipelineWorkflow.run, workflow)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await handle.result()
        except RPCError as exc:  # not started yet
            if exc.status != RPCStatusCode.NOT_FOUND or (
                asyncio.get_running_loop().time() > deadline
            ):
                raise
            await asyncio.sleep(1)


def test_backfill_then_the_watcher_and_the_schedule_fire_inside_the_services(
    deployed, bare_january
) -> None:
    """A month backfilled through the client equals bare; then, with no CLI call, the watcher
    `up` started runs when the source's clock moves, and the Schedule `up` put on the server
    fires (a Schedule backfill of its last cron time): a run with nothing new changes nothing."""
    fresh_warehouse("temporal")
    url, token = deployed_api()
    february_first = "2013-02-01"

    async def main():
        client = await connect(deploy.address())
        set_clock(url, token, JANUARY)  # published: January; the watcher takes it as its baseline
        rewound = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # history's times
        backfill = await start(client, BackfillInput(["2013-01"], JANUARY, **placement()))
        months = await backfill.result()
        month_print = fingerprint(warehouse())
        await polled_since(client, rewound)
        set_clock(url, token, february_first)  # new data: what the watcher is waiting for
        watched = await result_of(client, f"{WATCHER_ID}/as-of-{february_first}")
        before = fingerprint(warehouse())
        # the Schedule's most recent cron time, backfilled: the server starts its action
        schedule = client.get_schedule_handle(SCHEDULE_ID)
        described = await schedule.describe()
        fired = len(described.info.recent_actions)
        now = datetime.datetime.now(datetime.UTC)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        await schedule.backfill(
            ScheduleBackfill(
                month_start - datetime.timedelta(minutes=1),
                month_start + datetime.timedelta(minutes=1),
                overlap=ScheduleOverlapPolicy.ALLOW_ALL,
            )
        )
        while len((described := await schedule.describe()).info.recent_actions) == fired:
            await asyncio.sleep(0.5)
        action = described.info.recent_actions[-1].action
        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
        scheduled = await result_of(client, action.workflow_id)
        return months, month_print, watched, before, scheduled

    try:
        months, month_print, watched, before, scheduled = asyncio.run(main())
    finally:
        set_clock(url, token, "2013-12-31")  # as `up` started it
    assert [m.partition for m in months] == ["2013-01"]  # a child workflow per month
    assert diff(bare_january, month_print) == []
    assert watched.ingested and any(i.new_rows > 0 for i in watched.ingested)
    ((last_day,),) = table_rows(warehouse(), "select max(flight_date) from marts.fct_flights")
    assert str(last_day) == february_first
    assert [i.new_rows for i in scheduled.ingested] == [0] * len(expected().resources)
    assert diff(before, fingerprint(warehouse())) == []
