"""Deployed mode: ``quartet up prefect`` (server on PostgreSQL, a process work pool and its
worker), runs submitted through the deployments, a flow-run process killed mid-load, the worker
killed and restarted. The topology is started once for the module and stopped at its end.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from core import settings
from orchestrators.prefect import NAME
from tests.helpers import (
    JANUARY,
    assert_same_as_bare,
    expected,
    fresh_warehouse,
    months_loaded,
    quartet,
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
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from orchestrators.prefect import deploy

        # this process talks to the deployed server from here on (Prefect read its settings
        # when it was imported: the environment alone would not reach it)
        with temporary_settings({PREFECT_API_URL: deploy.api_url()}):
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

    from core import postgres

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


@pytest.mark.deployed_pending
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


@pytest.mark.deployed_pending
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


@pytest.mark.deployed_pending
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


@pytest.mark.deployed_pending
def test_token_stays_out_of_logs_and_metadata(deployed, source_api) -> None:
    import psycopg2

    from core import postgres

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
