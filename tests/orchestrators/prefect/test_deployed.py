"""Deployed mode: ``quartet up prefect`` (server on PostgreSQL, a process work pool and its
worker), the as-of trigger (new data in the source API starts a run of the ``full`` deployment),
runs submitted through the deployments and seen in the server's UI in a real browser, a flow-run
process killed mid-load, the worker killed and restarted, and last the server itself killed and
restarted. The topology is started once for the module and stopped at its end.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from core import settings
from orchestrators.prefect import NAME
from tests.browser import NODES, chromium_page, missing_texts, screenshot
from tests.helpers import (
    JANUARY,
    assert_loopback_only,
    assert_same_as_bare,
    assert_token_on_no_command_line,
    expected,
    fresh_warehouse,
    months_loaded,
    quartet,
)
from tests.orchestrators.prefect.prefect_ui import (
    assert_secrets_need_the_credential,
    open_flow_run,
    sign_in,
)


def deployed_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


@pytest.fixture(scope="module")
def deployed(source_api, postgres_server, quartet_home):
    """``quartet up prefect`` for the module; ``quartet down prefect`` at its end. The watcher
    polls hourly here: each poll is a flow-run process, and the trigger is tested by test_ui."""
    os.environ["QUARTET_PREFECT_WATCH_SECONDS"] = "3600"
    up = quartet("up", NAME, env=deployed_env(), timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        from orchestrators.prefect.harness import deploy

        # this process talks to the deployed server from here on, signed in (Prefect read its
        # settings when it was imported: the environment alone would not reach it)
        with temporary_settings(
            {PREFECT_API_URL: deploy.api_url(), PREFECT_API_AUTH_STRING: deploy.auth_string()}
        ):
            yield deploy
    finally:
        down = quartet("down", NAME, env=deployed_env(), timeout=120)
        os.environ.pop("QUARTET_PREFECT_WATCH_SECONDS", None)
        assert down.returncode == 0, down.stderr
        status = json.loads(quartet("status", NAME, "--json", env=deployed_env()).stdout)
        assert not any(s["running"] for s in status.values())  # nothing left behind


def flow_run(run_id):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def wait_final(run_id, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = flow_run(run_id)
        if run.state and run.state.is_final() and not run.state.is_crashed():
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} still {run.state.type} after {timeout:.0f}s")


def state_history(run_id) -> list[str]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return [s.type.value for s in client.read_flow_run_states(run_id)]


def test_up_registers_everything_on_postgres(deployed, postgres_server) -> None:
    import psycopg2

    from lab import postgres

    status = json.loads(quartet("status", NAME, "--json", env=deployed_env()).stdout)
    assert {"server", "worker"} <= set(status) and all(s["ready"] for s in status.values())
    again = quartet("up", NAME, env=deployed_env(), timeout=300)  # up twice is harmless
    assert again.returncode == 0, again.stderr
    assert {n: s["pid"] for n, s in status.items()} == {
        n: s["pid"]
        for n, s in json.loads(quartet("status", NAME, "--json", env=deployed_env()).stdout).items()
    }

    with psycopg2.connect(postgres.database_url(NAME)) as con, con.cursor() as cur:
        cur.execute("select count(*) from flow_run")  # Prefect's own tables live here
        cur.execute("select extname from pg_extension where extname = 'pg_trgm'")
        assert cur.fetchone() == ("pg_trgm",)

    from prefect import get_client

    names = [
        "quartet-pipeline/full",
        "quartet-ingestion/ingestion",
        "quartet-transformation/transformation",
        "quartet-backfill/backfill",
        "quartet-source-watcher/poll",
    ]
    with get_client(sync_client=True) as client:
        by_name = {name: client.read_deployment_by_name(name) for name in names}
        automations = client.read_automations_by_name(deployed.CRASH_AUTOMATION)
    for deployment in by_name.values():
        assert deployment.work_pool_name == deployed.POOL
        assert deployment.job_variables["working_dir"] == str(settings.REPO_ROOT)
    assert len(automations) == 1


def subflow_runs(run_id) -> list:
    """The flow runs started inside ``run_id``, in the order they ran."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=10,
        )


def graph_label(run) -> str:
    """How the run graph labels a subflow run's node: ``<flow> / <flow run>``."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return f"{client.read_flow(run.flow_id).name} / {run.name}"


def run_triggered_by_new_data(deployed, as_of: str):
    """Publish the source's data up to ``as_of`` and return the flow run the server's as-of
    trigger created for it, once final.

    The watcher's baseline is the day before (as if its last poll had seen it); the clock then
    moves to ``as_of`` and the ``poll`` deployment runs once, as its schedule would (hourly in
    this module: each poll is a flow-run process). The trigger is the server's: the deployment
    trigger of ``full``, an automation fired by the watcher's ``quartet.source.published`` event.
    """
    import datetime as dt

    from prefect.deployments import run_deployment
    from prefect.variables import Variable

    from core import project
    from core.source_service import api_status, set_clock
    from orchestrators.prefect import WATERMARK_VARIABLE

    url, token = deployed.source_api()
    probe = project.freshness(project.current())  # what the watcher polls
    published = api_status(url, token)["as_of"][:10]  # as `up` started it
    day_before = (dt.date.fromisoformat(as_of) - dt.timedelta(days=1)).isoformat()
    set_clock(url, token, day_before)
    Variable.set(WATERMARK_VARIABLE, probe(url, token), overwrite=True)
    try:
        moved = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        set_clock(url, token, as_of)  # new data is published
        poll = run_deployment("quartet-source-watcher/poll", timeout=0, as_subflow=False)
        triggered = runs_of_full_created_since(moved, as_of, waiting_for=poll)
        created = time.monotonic() - started
        assert wait_final(poll.id).state.is_completed()
        run = wait_final(triggered[0].id)
        # one event, one run
        assert [r.id for r in runs_of_full_created_since(moved, as_of, waiting_for=poll)] == [
            run.id
        ]
        print(
            f"\nclock moved -> triggered run created {created:.1f}s (the watcher's poll "
            f"included) -> {run.state.type.value} {time.monotonic() - started:.1f}s"
        )
        return run
    finally:
        # the later tests read the whole year; the watcher's baseline follows, so that no poll
        # takes the restore for new data
        set_clock(url, token, published)
        Variable.set(WATERMARK_VARIABLE, probe(url, token), overwrite=True)


def runs_of_full_created_since(moment, as_of: str, *, waiting_for) -> list:
    """The runs of ``quartet-pipeline/full`` as of ``as_of`` created after ``moment``; waits for
    the first one (the watcher's poll ``waiting_for`` emits the event that creates it)."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + 600
    with get_client(sync_client=True) as client:
        while True:
            runs = [
                r
                for r in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name={"any_": ["full"]}),
                    sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                    limit=50,
                )
                if r.created >= moment and r.parameters.get("as_of") == as_of
            ]
            if runs:
                return runs
            assert time.monotonic() < deadline, (
                f"no run of quartet-pipeline/full as of {as_of}; the watcher's poll "
                f"{waiting_for.id} is {flow_run(waiting_for.id).state.type.value}"
            )
            time.sleep(1)


def test_new_source_data_triggers_a_run_the_ui_shows_on_its_graph(
    deployed, bare_january, tmp_path
) -> None:
    """The as-of trigger, then the UI. New data in the source API (January published): the
    server's automation runs the ``full`` deployment with that as-of, and the run loads it equal
    to bare's. That run, opened in a real browser (Debian's chromium, headless, Playwright) on the
    page ``quartet run prefect --deployed`` links to: the deployed server's UI shows it
    Completed, from its deployment, its graph drawn with its two subflows; each subflow's page
    draws a task run per dlt resource or per dbt model."""
    from prefect import get_client

    from orchestrators.prefect import NEW_DATA_EVENT

    warehouse = fresh_warehouse(NAME)
    run = run_triggered_by_new_data(deployed, JANUARY)
    assert run.state.is_completed(), run.state.message
    # Prefect's own record of who started it: the deployment trigger's automation
    assert run.created_by is not None and run.created_by.type == "AUTOMATION", run.created_by
    with get_client(sync_client=True) as client:
        full = client.read_deployment_by_name("quartet-pipeline/full")
        automation = client.read_automation(run.created_by.id)
    assert run.deployment_id == full.id
    assert automation.trigger.expect == {NEW_DATA_EVENT}
    assert [a.deployment_id for a in automation.actions] == [full.id]
    assert_same_as_bare(warehouse, bare_january)
    ingestion, transformation = subflow_runs(run.id)
    ui = deployed.api_url().removesuffix("/api")
    shown: dict[str, list] = {}

    with chromium_page() as page:
        sign_in(page, f"{ui}/runs/flow-run/{run.id}", deployed.auth_string())
        # the run: its header (state, flow, deployment) and its graph, whose nodes are the subflows
        graph = open_flow_run(page, ui, run.id, "Subflow Runs")
        heading = page.locator(".page-heading-flow-run")
        shown["heading"] = missing_texts(
            heading, [run.name, "Completed", "quartet-pipeline", "Deployment"]
        )
        shown["deployment"] = missing_texts(heading.get_by_role("link"), ["full"])
        shown["subflow list"] = missing_texts(page, [ingestion.name, transformation.name])
        page.wait_for_timeout(2000)  # the canvas draws after the data arrives: for the picture
        screenshot(page, "ui-prefect-deployed", tmp_path)
        assert graph == {
            graph_label(ingestion): "COMPLETED",
            graph_label(transformation): "COMPLETED",
        }, f"the graph at {page.url} draws {graph}"

        # each subflow's graph: a node per task run; its Task Runs tab lists them by name
        tasks = {}
        for subflow, names in (
            (ingestion, [f"ingest {resource}" for resource in expected().resources]),
            (transformation, [f"model {model}" for model in expected().models]),
        ):
            nodes = open_flow_run(page, ui, subflow.id, "Task Runs")
            tasks.update({name: nodes.get(name) for name in names})
            listed = page.locator(".flow-run-task-runs")
            search = listed.get_by_placeholder("Search by run name")
            for name in names:
                if any(name.endswith(f" {node}") for node in NODES):
                    # the list loads as it scrolls: search for the task run, as a user would
                    search.fill(name)
                    shown.setdefault("task-run list", []).extend(missing_texts(listed, [name]))

    assert {name: state for name, state in tasks.items() if state != "COMPLETED"} == {}, (
        "task-run nodes missing (None) or not Completed in the subflows' graphs"
    )
    assert {where: texts for where, texts in shown.items() if texts} == {}, (
        f"the UI at {ui} does not show these of flow run {run.name} ({run.id})"
    )


def test_flow_run_process_killed_mid_load_recovers_by_itself(deployed, bare_january) -> None:
    """kill -9 of the process running a flow run while it loads flights: the worker reports it
    Crashed, the crash automation schedules it again, the worker reruns it, and the warehouse
    ends equal to bare's. No step of ours between the kill and the success."""
    from prefect.deployments import run_deployment

    warehouse = fresh_warehouse(NAME)
    lock_file = warehouse.with_name(warehouse.name + ".lock")
    run = run_deployment(
        "quartet-pipeline/full", parameters={"as_of": JANUARY}, timeout=0, as_subflow=False
    )
    deadline = time.monotonic() + 900
    while "prefect ingest" not in (lock_file.read_text() if lock_file.exists() else ""):
        assert time.monotonic() < deadline, f"flow run {run.id} never started ingesting"
        time.sleep(0.2)
    pid = int(flow_run(run.id).infrastructure_pid.rsplit(":", 1)[-1])
    # the flow-run process our worker started, with what it started (as a lost container or
    # machine loses them): its multiprocessing children would keep its output pipe open, and
    # the worker would wait for it forever
    os.killpg(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    final = wait_final(run.id)
    print(f"\nkill-to-success: {time.monotonic() - killed_at:.1f}s")
    assert final.state.is_completed(), final.state.message
    assert "CRASHED" in state_history(run.id)
    assert_same_as_bare(warehouse, bare_january)


def test_backfill_submitted_through_the_deployment(deployed) -> None:
    """``quartet run prefect --deployed`` with two months: one backfill flow run, a subflow per
    month, followed to the end with one line per unit."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    proc = quartet(
        "run", NAME, "--deployed", "--partition", "2013-02", "--partition", "2013-03",
        env=deployed_env(), timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted quartet-backfill/backfill" in proc.stdout
    for resource in expected().resources:
        assert f"[prefect] ingest  {resource} 2013-03" in proc.stdout
    assert months_loaded(settings.for_pipeline(NAME).warehouse) == ["2013-01", "2013-02", "2013-03"]

    with get_client(sync_client=True) as client:
        (parent,) = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name={"any_": ["backfill"]}),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=10,
        )
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=10,
        )
    assert parent.parameters["start"] == "2013-02" and parent.parameters["end"] == "2013-03"
    assert [c.name for c in children] == ["ingestion 2013-02", "ingestion 2013-03", *[
        c.name for c in children if not c.name.startswith("ingestion")
    ]]  # fmt: skip


def test_worker_killed_and_restarted_picks_up_what_was_scheduled(deployed) -> None:
    from prefect.deployments import run_deployment

    worker = deployed.topology().service("worker")
    os.killpg(worker.pid, signal.SIGKILL)  # the worker `up` started, and its process group
    while worker.running():
        time.sleep(0.1)
    run = run_deployment("quartet-transformation/transformation", timeout=0, as_subflow=False)
    assert flow_run(run.id).state.is_scheduled()  # nobody to run it

    up = quartet("up", NAME, env=deployed_env(), timeout=600)  # starts only what is down
    assert up.returncode == 0, up.stderr
    final = wait_final(run.id)
    assert final.state.is_completed(), final.state.message


def test_nothing_listens_beyond_loopback_and_secrets_need_the_credential(
    deployed, source_api
) -> None:
    """Every service binds loopback only; no command line carries the source token or the
    server's credential; the block documents' endpoints refuse to hand the Secret block's value
    to a caller without the credential (and answer with it)."""
    pids = [s["pid"] for s in deployed.status().values() if s["running"]]
    assert {"server", "worker"} <= {n for n, s in deployed.status().items() if s["running"]}
    sockets = assert_loopback_only(*pids)
    server_port = int(deployed.api_url().rsplit(":", 1)[1].split("/")[0])
    assert server_port in {port for _ip, port, _pid, _cmd in sockets}
    assert_token_on_no_command_line(source_api.token, *pids)
    assert_token_on_no_command_line(deployed.auth_string(), *pids)
    credential = deployed.home() / "api_auth_string"
    assert credential.stat().st_mode & 0o777 == 0o600
    assert_secrets_need_the_credential(deployed.api_url(), deployed.auth_string(), source_api.token)


def test_token_stays_out_of_logs_and_metadata(deployed, source_api) -> None:
    import psycopg2

    from lab import postgres

    for log in settings.log_dir(NAME).glob("*.log"):
        assert source_api.token not in log.read_text(errors="replace"), log
    with psycopg2.connect(postgres.database_url(NAME)) as con, con.cursor() as cur:
        cur.execute("select count(*) from log where message like %s", (f"%{source_api.token}%",))
        assert cur.fetchone() == (0,)
        cur.execute(
            "select count(*) from flow_run where parameters::text like %s",
            (f"%{source_api.token}%",),
        )
        assert cur.fetchone() == (0,)
        cur.execute(
            "select count(*) from block_document where data::text like %s",
            (f"%{source_api.token}%",),
        )
        assert cur.fetchone() == (0,)  # the Secret block's value is stored encrypted


def test_server_killed_mid_run_and_restarted_loses_nothing(deployed) -> None:
    """Last in the module: it restarts the server. kill -9 of ``prefect server start`` (its
    process group) while a flow run builds dbt over what the module loaded and a second one waits
    for the deployment's concurrency slot; ``quartet up`` starts the server again (only it). The
    waiting run ends Completed as the restarted server reports it; the running one too, unless
    it opened a new API connection during the outage: Prefect's client retries a lost connection
    only on a client that had connected before (ADR 0015), so that run ends Failed, naming the
    refused connection, never hanging. The next submitted run completes either way."""
    from prefect.deployments import run_deployment

    def submit():
        return run_deployment("quartet-transformation/transformation", timeout=0, as_subflow=False)

    warehouse = settings.for_pipeline(NAME).warehouse
    lock_file = warehouse.with_name(warehouse.name + ".lock")
    running = submit()
    deadline = time.monotonic() + 900
    while "prefect dbt build" not in (lock_file.read_text() if lock_file.exists() else ""):
        assert time.monotonic() < deadline, f"flow run {running.id} never started dbt"
        time.sleep(0.2)
    waiting = submit()  # the deployment runs one at a time: this one waits through the outage
    server = deployed.topology().service("server")
    worker_pid = deployed.topology().service("worker").pid
    os.killpg(server.pid, signal.SIGKILL)  # the server and its background services
    killed_at = time.monotonic()
    while server.running():
        time.sleep(0.1)

    up = quartet("up", NAME, env=deployed_env(), timeout=600)  # starts only what is down
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    restarted = time.monotonic() - killed_at
    finals = {}
    for name, run in (("running", running), ("waiting", waiting)):
        finals[name] = wait_final(run.id, timeout=600)
        print(
            f"\n{name} at the kill: {finals[name].state.type.value} "
            f"{time.monotonic() - killed_at:.1f}s after it, history {state_history(run.id)}"
        )
    print(
        f"server back {restarted:.1f}s after the kill; worker pid "
        f"{worker_pid} -> {deployed.topology().service('worker').pid}"
    )
    assert finals["waiting"].state.is_completed(), finals["waiting"].state.message
    running = finals["running"].state
    assert running.is_completed() or (
        running.is_failed() and "ConnectError" in (running.message or "")
    ), running.message

    submitted = time.monotonic()
    after = wait_final(submit().id, timeout=600)
    print(f"next submitted run {after.state.type.value} in {time.monotonic() - submitted:.1f}s")
    assert after.state.is_completed(), after.state.message
