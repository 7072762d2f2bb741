"""``ui``: api-server, dag-processor, scheduler and triggerer of the dev-mode home, on 127.0.0.1.

Not ``airflow standalone``: it leaves its workers behind on SIGTERM, while separate services
stop cleanly with their process group. The triggerer runs too, so the UI's health shows every
component (none of the DAGs defers today). The scheduler and the triggerer run without their log
server, which binds every interface: all of them share the home's log folder. A finished run is
recorded first (``dag.test()``, one line per task) when the metadata DB has none, so there is
something to look at. Ctrl-C or SIGTERM stops it all.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from datetime import date, timedelta

from core import kit, project, settings
from core.kit import UiRequest, progress
from core.net import free_port
from orchestrators.airflow import NAME, PIPELINE_DAG
from orchestrators.airflow.harness import environment
from orchestrators.airflow.harness.environment import SERVICES, USER, Ports


def has_finished_run() -> bool:
    from airflow.models.dagrun import DagRun

    return bool(DagRun.find(dag_id=PIPELINE_DAG, state="success"))


def last_run_id() -> str | None:
    """The pipeline's most recent run (by when it was due to run), if any."""
    from airflow.models.dagrun import DagRun

    runs = DagRun.find(dag_id=PIPELINE_DAG)
    return max(runs, key=lambda r: r.run_after).run_id if runs else None


def links(url: str, run_id: str | None) -> list[tuple[str, str, str]]:
    """(what, URL, note) of the pages a user opens; the first is where to land: the last run's
    page (a fresh browser shows it beside the grid of every run, Graph draws the run's tasks)."""
    pipeline = f"{url}/dags/{PIPELINE_DAG}"
    found = []
    if run_id:
        run = f"{pipeline}/runs/{urllib.parse.quote(run_id, safe='')}"
        found.append(("last run", run, "beside every run; Graph draws its tasks and states"))
    found.append(("pipeline", pipeline, "the DAG: Grid of its runs, Graph of its tasks"))
    found.append(("assets", f"{url}/assets", "every warehouse table and the tasks writing it"))
    return found


def first_partition_end() -> str | None:
    """The clock of the run recorded for a first look: the last day of the first partition,
    for a project whose source has a clock and partitions (a small run); else none."""
    declared = project.current()
    if not (declared.clock and declared.partitions.enabled):
        return None
    _, until = declared.partitions.bounds(declared.partitions.first)
    return (date.fromisoformat(until[:10]) - timedelta(days=1)).isoformat()


def serve(request: UiRequest) -> None:
    from orchestrators.airflow.harness.run import (
        CHATTY_LOGGERS,
        followed_run,
        one_dev_run_at_a_time,
        parsed_dag,
    )

    log = progress.orchestrator_log(NAME, CHATTY_LOGGERS)
    home = environment.migrate_dev()
    ports = Ports(api=free_port(request.port or 8080))
    as_of = request.as_of or first_partition_end()
    progress.say(
        NAME,
        f"dev-mode UI: {', '.join(SERVICES)} on 127.0.0.1:{ports.api}, "
        f"metadata {home / 'airflow.db'}",
    )
    with kit.source_api() as (api_url, token), contextlib.ExitStack() as stack:
        # the demo API's connection, for a project that runs it
        connection = (
            environment.source_api_connection(api_url, token) if project.current().demo_api else {}
        )
        if not has_finished_run():
            clock = f" (as of {as_of})" if as_of else ""
            progress.say(NAME, f"recording a finished run to look at{clock}")
            location = settings.for_pipeline(NAME).location
            with one_dev_run_at_a_time(), open(log, "a") as out:
                followed_run(parsed_dag(log), location, log, out, as_of=as_of, partition=None)
        env = {
            **environment.service_env(
                home, ports, os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
            ),
            **connection,
        }
        timeout = kit.policy().healthy_timeout_seconds
        stack.callback(progress.say, NAME, f"stopped {', '.join(SERVICES)}")
        running = [
            stack.enter_context(service.running_context(timeout))
            for service in environment.services(home, env, ports, SERVICES)
        ]
        url = f"http://127.0.0.1:{ports.api}"
        for what, link, note in links(url, last_run_id()):
            progress.say(NAME, f"{what:9s} {link}  ({note})")
        progress.say(
            NAME,
            f"sign in as {USER}: the password is in {environment.passwords_file(home)} (mode 600)",
        )
        progress.say(NAME, f"logs: {home / 'logs' / 'services'}/, Airflow's log {log}")
        progress.say(NAME, "Ctrl-C to stop")
        try:
            while all(service.running() for service in running):
                time.sleep(1)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the way to stop the UI, not a failure
            return
        dead = next(s for s in running if not s.running())
        raise kit.ServiceError(f"service {dead.name} {dead.exit_reason()}")
