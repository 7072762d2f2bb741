"""Deployed mode: `quartet up dagster` (code server, webserver, daemon on PostgreSQL), runs
submitted through the GraphQL API, a run worker killed mid-ingestion, the sensor in the daemon,
and `quartet down dagster`.

The topology is started once for this module, in the session's QUARTET_HOME, with its own source
API whose clock starts at the end of January (QUARTET_AS_OF, the runs' default clock) and a sensor
interval of two seconds. Everything is checked on the warehouse (bare's fingerprint) and on what
Dagster reports.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from core import settings
from core.ingestion import AS_OF_ENV
from tests.browser import NODES, chromium_page, goto_when_served, missing_texts, screenshot
from tests.helpers import (
    JANUARY,
    assert_loopback_only,
    assert_same_as_bare,
    assert_token_on_no_command_line,
    expected,
    fresh_warehouse,
    quartet,
)
from tests.orchestrators.dagster.exposure import assert_graphql_keeps_the_token

SENSOR_SECONDS = 2


def _test_config(folder: Path) -> Path:
    text, found = re.subn(
        r"(?m)^source_poll_seconds = .*$",
        f"source_poll_seconds = {SENSOR_SECONDS}",
        settings.INGESTION_CONFIG.read_text(),
    )
    assert found == 1, "core/ingestion.toml has no source_poll_seconds"
    path = folder / "ingestion.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def deployed(quartet_home, postgres_server, tmp_path_factory, bare_january):
    config = _test_config(tmp_path_factory.mktemp("dagster-deployed"))
    saved = {
        k: os.environ.get(k) for k in ("QUARTET_INGESTION_CONFIG", "SOURCE_API_URL", AS_OF_ENV)
    }
    os.environ["QUARTET_INGESTION_CONFIG"] = str(config)
    os.environ[AS_OF_ENV] = JANUARY  # the deployment's source API starts at January's end
    os.environ["SOURCE_API_URL"] = ""  # the deployment starts a source API of its own
    started = time.monotonic()
    done = quartet("up", "dagster", timeout=900)
    up_seconds = time.monotonic() - started
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        from orchestrators.dagster.harness import deploy

        state = deploy._deployment(create=False)
        with deploy.deployed_instance(state) as instance:
            yield deploy, state, instance, up_seconds
    finally:
        quartet("down", "dagster", timeout=300)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _token() -> str:
    return os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN


def test_up_starts_every_service_and_up_again_is_harmless(deployed):
    import sqlalchemy

    deploy, _state, instance, up_seconds = deployed
    status = deploy.status()
    assert set(status) == {"source-api", "code-server", "webserver", "daemon"}
    assert all(s["ready"] for s in status.values()), status
    # Dagster's storage sessions (the services get the same URL) commit without waiting for
    # PostgreSQL's WAL flush (levers.postgres_session_options), unless QUARTET_STOCK=1
    from orchestrators.dagster import levers

    with instance.event_log_storage.index_connection() as connection:
        committed = connection.execute(sqlalchemy.text("SHOW synchronous_commit")).scalar()
    assert committed == ("off" if levers.on() else "on")
    # no login in Dagster's open-source edition: every service listens on loopback only, no
    # command line carries the token, and the community dialog is off (dagster.yaml `nux`)
    pids = [s["pid"] for s in status.values()]
    sockets = assert_loopback_only(*pids)
    assert {_state["web_port"], _state["grpc_port"]} <= {port for _, port, _, _ in sockets}
    assert_token_on_no_command_line(_token(), *pids)
    assert deploy.graphql(_state, "{ shouldShowNux }") == {"shouldShowNux": False}
    again = quartet("up", "dagster", timeout=300)
    assert again.returncode == 0, again.stderr
    assert {n: s["pid"] for n, s in deploy.status().items()} == {
        n: s["pid"] for n, s in status.items()
    }
    print(f"\nup to healthy: {up_seconds:.1f}s")


def test_a_run_submitted_through_graphql_builds_bare_and_keeps_the_token_out(
    deployed, bare_january
):
    deploy, state, _instance, _ = deployed
    warehouse = fresh_warehouse("dagster")
    done = quartet("run", "dagster", "--deployed", "--as-of", JANUARY, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    ingested = [line for line in lines if line.startswith("[dagster] ingest ")]
    assert len(ingested) == len(expected().resources)
    # a line per model, with the tests core.lineage attaches to it (data and unit tests)
    from core import lineage

    tests = lineage.canonical().tests
    models = {}
    for line in lines:
        if found := re.match(r"\[dagster\] dbt +(\S+) ", line):
            passed = re.search(r"(\d+) tests passed", line)
            models[found.group(1)] = int(passed.group(1)) if passed else 0
    assert models == {model: len(tests.get(model, ())) for model in expected().models}, lines
    assert "\x1b[" not in done.stdout and "START" not in done.stdout  # no dbt log, no colours
    assert len(lines) <= expected().units + 6, lines
    assert_same_as_bare(warehouse, bare_january)

    # Dagster's own view: the run, submitted through GraphQL, succeeded with the clock given
    runs = deploy.graphql(
        state, "{ runsOrError { ... on Runs { results { runId status runConfigYaml } } } }"
    )["runsOrError"]["results"]
    assert runs[0]["status"] == "SUCCESS" and JANUARY in runs[0]["runConfigYaml"]

    # the token: not in the metadata database, the logs, or what the UI shows
    import psycopg2

    token = _token()
    url = state["postgres_url"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute(
            "select table_name from information_schema.tables where table_schema = 'public'"
        )
        for (table,) in cur.fetchall():
            cur.execute(f'select count(*) from "{table}" t where t::text like %s', (f"%{token}%",))
            assert cur.fetchone()[0] == 0, f"the token is in table {table}"
    for folder in (settings.log_dir("dagster"), deploy.home()):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix not in (".json",):
                assert token not in path.read_text(errors="replace"), f"the token is in {path}"
    resources = deploy.graphql(
        state,
        """{ repositoriesOrError { ... on RepositoryConnection { nodes {
             allTopLevelResourceDetails { name configFields { name } configuredValues { key value type } } } } } }""",
    )
    assert token not in str(resources)
    assert "SOURCE_API_TOKEN" in str(resources)  # shown as the variable's name
    # without credentials (there are none to give): resources, env vars, run configs, instance
    assert_graphql_keeps_the_token(deploy.web_url(state), deploy.LOCATION, token)


def test_a_run_worker_killed_mid_ingestion_is_retried_to_bare(deployed, bare_january):
    import dagster as dg

    deploy, state, instance, _ = deployed
    from orchestrators.dagster.harness.run import run_worker_pid

    warehouse = fresh_warehouse("dagster")
    run_id = deploy.submit_run(state, JANUARY)
    deadline = time.monotonic() + 900
    worker = None
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        slots = instance.event_log_storage.get_concurrency_info("quartet_warehouse").claimed_slots
        if any(s.run_id == run_id and s.step_key == "ingest_flights" for s in slots):
            worker = run_worker_pid(instance, run)
            break
        assert not run.is_finished, f"run {run_id} ended ({run.status}) before the kill"
        time.sleep(0.2)
    assert worker, "the run never reached ingest_flights"
    os.kill(worker[0], signal.SIGKILL)
    killed = time.monotonic()
    final = deploy.follow(state, instance, run_id, say=lambda _: None, timeout=1200)
    kill_to_success = time.monotonic() - killed
    assert final.status == dg.DagsterRunStatus.SUCCESS
    assert final.run_id != run_id and final.tags["dagster/root_run_id"] == run_id  # a retry
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert_same_as_bare(warehouse, bare_january)
    print(f"\nkill -9 of the run worker to success: {kill_to_success:.1f}s")


def test_the_sensor_in_the_daemon_loads_what_the_api_publishes(deployed, bare_in_order):
    import dagster as dg

    from core.source_service import set_clock

    deploy, state, instance, _ = deployed
    later = "2013-02-28"
    expected_fp = bare_in_order(["2013-01", "2013-02"], later)
    # the sensor has seen the clock the API started with
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        cursors = [
            s.instigator_data.cursor
            for s in instance.all_instigator_state()
            if s.name == "source_freshness" and s.instigator_data
        ]
        if JANUARY in cursors:
            break
        time.sleep(1)
    assert JANUARY in cursors
    set_clock(state["source_api_url"], _token(), later)  # February's data is published
    deadline = time.monotonic() + 300
    runs = []
    while time.monotonic() < deadline and len(runs) < 2:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"quartet/as_of": later}))
        time.sleep(1)
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["2013-01", "2013-02"]
    for run in runs:
        deploy.follow(state, instance, run.run_id, say=lambda _: None, timeout=1200)
    assert_same_as_bare(settings.for_pipeline("dagster").warehouse, expected_fp)


def test_a_backfill_of_months_is_a_dagster_backfill(deployed):
    _deploy, _state, _instance, _ = deployed
    done = quartet(
        "run",
        "dagster",
        "--deployed",
        "--partition",
        "2013-02",
        "--partition",
        "2013-01",
        "--as-of",
        "2013-02-28",
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "backfill" in done.stdout
    backfill_id = re.search(r"backfill (\w+)", done.stdout).group(1)
    status, runs = _deploy.backfill_runs(_state, backfill_id)
    assert status.startswith("COMPLETED")
    # one run per month, or one over the range (the assets' BackfillPolicy.single_run)
    months = {"dagster/partition", "dagster/asset_partition_range_start"}
    months |= {"dagster/asset_partition_range_end"}
    covered = {t["value"] for r in runs for t in r["tags"] if t["key"] in months}
    assert covered == {"2013-01", "2013-02"}
    assert all(r["status"] == "SUCCESS" for r in runs)


RUNS_QUERY = """
query($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId tags { key value } } } }
}"""
#: tags of the runs Dagster's daemon starts by itself; a run without them came through the API
DAEMON_TAGS = {
    "dagster/sensor_name",
    "dagster/schedule_name",
    "dagster/backfill",
    "dagster/parent_run_id",  # a retry
}


def _succeeded_api_run(deploy, state: dict, instance) -> str:
    """The newest successful run submitted through the GraphQL API (`quartet run dagster
    --deployed` in the GraphQL test), else one submitted now: no dependency on test order."""
    succeeded = {"pipelineName": deploy.JOB, "statuses": ["SUCCESS"]}
    runs = deploy.graphql(state, RUNS_QUERY, {"filter": succeeded})["runsOrError"]["results"]
    for run in runs:  # newest first
        if not DAEMON_TAGS & {tag["key"] for tag in run["tags"]}:
            return run["runId"]
    run_id = deploy.submit_run(state, JANUARY)
    return deploy.follow(state, instance, run_id, say=lambda _: None, timeout=1500).run_id


def test_the_webserver_shows_a_run_submitted_through_the_api_in_a_browser(deployed, tmp_path):
    from playwright.sync_api import expect

    deploy, state, instance, _ = deployed
    run_id = _succeeded_api_run(deploy, state, instance)
    shown = {"timeout": 60_000}  # the page renders as its GraphQL queries answer
    with chromium_page() as page:
        # as for a user who dismissed it once: Dagster's community dialog would cover the page
        page.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
        goto_when_served(page, f"{deploy.web_url(state)}/runs/{run_id}")
        # the run page names the run by its short id; its title carries the status Dagster
        # reports once the run is loaded (an unknown id leaves it at "Runs | <short id>")
        expect(page).to_have_title(f"Runs | {deploy.JOB} | {run_id[:8]} [SUCCESS]", **shown)
        expect(page.get_by_text(run_id[:8], exact=True).first).to_be_visible(**shown)
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(**shown)
        # every step succeeded, as the run's event log (the steps' sidebar) reports: one
        # ingestion op per resource and the dbt build
        steps = len(expected().resources) + 1
        expect(page.get_by_text(f"Succeeded ({steps})", exact=True)).to_be_visible(**shown)
        screenshot(page, "ui-dagster-deployed", tmp_path)
        # the header folds the run's assets into "<n> assets"; its "View list" lists them all
        page.get_by_text(re.compile(r"^\d+ assets$")).first.hover()
        page.get_by_role("button", name="View list").click()
        assets = page.get_by_role("dialog").filter(has_text="Assets in run")
        missing = missing_texts(assets, NODES)
        assert missing == [], f"run {run_id} at {page.url} does not list {missing}"


RUN_STATUSES_QUERY = """{ runsOrError { ... on Runs { results { runId status } } } }"""
#: the services `quartet up dagster` must bring back; the source API is not Dagster's
DAGSTER_SERVICES = ("code-server", "webserver", "daemon")


def _run_statuses(deploy, state: dict) -> dict[str, str]:
    answer = deploy.graphql(state, RUN_STATUSES_QUERY)["runsOrError"]["results"]
    return {run["runId"]: run["status"] for run in answer}


def test_services_killed_and_restarted_lose_no_runs_and_no_warehouse_data(deployed):
    """Checklist item 5: kill -9 of the code server, the webserver and the daemon; `quartet up
    dagster` starts them again; every run Dagster had is still there with its status, the
    warehouse is unchanged, and the restarted services run a new run to success."""
    import dagster as dg

    from lab.fingerprint import diff, fingerprint

    deploy, state, instance, _ = deployed
    finished = _succeeded_api_run(deploy, state, instance)  # an earlier test's run, if any
    runs_before = _run_statuses(deploy, state)
    assert runs_before[finished] == "SUCCESS"
    warehouse = settings.for_pipeline("dagster").warehouse
    warehouse_before = fingerprint(warehouse)
    services = deploy.status()
    killed = {name: services[name]["pid"] for name in DAGSTER_SERVICES}
    started = time.monotonic()
    for pid in killed.values():
        os.killpg(pid, signal.SIGKILL)  # the service and whatever it started: nothing shuts down
    deadline = time.monotonic() + 60  # SIGKILL is delivered asynchronously
    while any(deploy.status()[name]["running"] for name in DAGSTER_SERVICES):
        assert time.monotonic() < deadline, f"still running after kill -9: {deploy.status()}"
        time.sleep(0.2)

    done = quartet("up", "dagster", timeout=900)
    restart_seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    services = deploy.status()
    assert all(s["ready"] for s in services.values()), services
    assert all(services[name]["pid"] != pid for name, pid in killed.items())

    # Dagster's history (PostgreSQL) survived: every run, with the status it had
    runs_after = _run_statuses(deploy, state)
    assert {run: runs_after.get(run) for run in runs_before} == runs_before
    assert diff(warehouse_before, fingerprint(warehouse)) == []

    # the restarted daemon dequeues a new run, the restarted code server runs it to success
    submitted = time.monotonic()
    run_id = deploy.submit_run(state, JANUARY)
    final = deploy.follow(state, instance, run_id, say=lambda _: None, timeout=1500)
    run_seconds = time.monotonic() - submitted
    assert (final.run_id, final.status) == (run_id, dg.DagsterRunStatus.SUCCESS)
    assert _run_statuses(deploy, state)[run_id] == "SUCCESS"
    print(
        f"\nkill -9 of {', '.join(killed)} to healthy again: {restart_seconds:.1f}s; "
        f"a new January run after it: {run_seconds:.1f}s"
    )


def test_down_stops_every_service_and_frees_every_port(deployed):
    import socket

    deploy, state, _instance, _ = deployed
    pids = [s["pid"] for s in deploy.status().values()]
    done = quartet("down", "dagster", timeout=300)
    assert done.returncode == 0, done.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    for port in (state["grpc_port"], state["web_port"]):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    assert deploy.status() == {}
