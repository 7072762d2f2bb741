"""``ui``: api-server, dag-processor and scheduler of the dev-mode home, on 127.0.0.1.

Not ``airflow standalone``: it leaves its workers behind on SIGTERM, while separate services
stop cleanly with their process group. A finished run is recorded first (``dag.test()``) when
the metadata DB has none, so there is something to look at. Ctrl-C or SIGTERM stops it all.
"""

from __future__ import annotations

import contextlib
import os
import time

from core import kit
from core.kit import UiRequest, progress
from core.net import free_port
from orchestrators.airflow import NAME, PIPELINE_DAG, environment
from orchestrators.airflow.environment import USER, Ports


def has_finished_run() -> bool:
    from airflow.models.dagrun import DagRun

    return bool(DagRun.find(dag_id=PIPELINE_DAG, state="success"))


def serve(request: UiRequest) -> None:
    from orchestrators.airflow.run import load_dag, run_once

    home = environment.migrate_dev()
    ports = Ports(
        api=free_port(request.port or 8080), worker_logs=free_port(), trigger_logs=free_port()
    )
    as_of = request.as_of or "2013-01-31"
    with kit.source_api() as (api_url, token), contextlib.ExitStack() as stack:
        connection = environment.source_api_connection(api_url, token)
        if not has_finished_run():
            progress.say(NAME, f"recording a finished run to look at (as of {as_of})...")
            run_once(load_dag(), as_of=as_of)
        env = {
            **environment.service_env(
                home, ports, os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
            ),
            **connection,
        }
        timeout = kit.policy().healthy_timeout_seconds
        stack.callback(progress.say, NAME, "stopped dag-processor, scheduler and api-server")
        running = [
            stack.enter_context(service.running_context(timeout))
            for service in environment.services(
                home, env, ports, ("api-server", "dag-processor", "scheduler")
            )
        ]
        url = f"http://127.0.0.1:{ports.api}"
        print(
            f"Airflow UI: {url}  (user {USER}, password {environment.password(home)})\n"
            f"  DAG: {url}/dags/{PIPELINE_DAG}   Assets: {url}/assets\n"
            f"  service logs: {home / 'logs' / 'services'}\nCtrl-C to stop.",
            flush=True,
        )
        try:
            while all(service.running() for service in running):
                time.sleep(1)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the way to stop the UI, not a failure
            return
        dead = next(s for s in running if not s.running())
        raise kit.ServiceError(f"service {dead.name} {dead.exit_reason()}")
