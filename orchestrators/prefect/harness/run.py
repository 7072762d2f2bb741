"""Dev-mode run: the ``quartet-pipeline`` flow in this process.

Against PREFECT_API_URL when set, else Prefect's ephemeral API (a server process on SQLite in
PREFECT_HOME, started for this run and stopped with it). One progress line per unit on stdout;
Prefect's, dlt's and dbt's own logs go to ``.quartet/prefect/logs/run.log``.
"""

from __future__ import annotations

import os
import time

from core import kit, settings
from core.kit import RunFailed, RunRequest, progress
from lab.postgres import mask
from orchestrators.prefect import CLIENT_AUTH_ENV, NAME, SERVER_AUTH_ENV, levers

#: the loggers whose detail goes to the log file instead of the terminal
LOGGERS = (
    "prefect",
    "prefect.flow_runs",
    "prefect.task_runs",
    "dlt",
    "dbt",
    "httpx",
    "quartet.units",  # the unit lines, which also go to the run's log on the server
)


def ephemeral_server_behind_auth() -> None:
    """The ephemeral API server of this run asks every caller for this PREFECT_HOME's credential.

    It listens on 127.0.0.1 for the run's life and holds the Secret block with the source token,
    which its API hands to any caller that asks for secrets: without a credential, to every local
    user. The server process inherits this process's environment; this process's clients sign in
    with the same credential (``configure``).
    """
    if os.environ.get(CLIENT_AUTH_ENV):
        os.environ.setdefault(SERVER_AUTH_ENV, os.environ[CLIENT_AUTH_ENV])


def run(request: RunRequest) -> None:
    started = time.perf_counter()
    if not os.environ.get("PREFECT_API_URL"):
        levers.ephemeral_server_without_block_catalog()
        ephemeral_server_behind_auth()
    from orchestrators.prefect.deployments import provision
    from orchestrators.prefect.flows import pipeline

    log = progress.orchestrator_log(NAME, LOGGERS)  # after Prefect set up its own logging

    with kit.source_api() as (_url, token):
        provision(token)
        state = pipeline(
            as_of=request.as_of, partitions=list(request.partitions) or None, return_state=True
        )
    if not state.is_completed():
        raise RunFailed(
            f"flow run {state.state_details.flow_run_id} {state.type.value.lower()}: "
            f"{state.message}\n(the orchestrator's log: {log})"
        )
    warehouse = mask(str(settings.for_pipeline(NAME).location))
    progress.say(
        NAME,
        f"run {state.state_details.flow_run_id} succeeded in {time.perf_counter() - started:.1f}s "
        f"-> {warehouse}; the orchestrator's log: {log}",
    )
