"""``quartet ui prefect``: Prefect's server and UI on 127.0.0.1, one pipeline run to look at,
then the deployments served from this process until Ctrl-C (or SIGTERM) stops everything.

The server is the deployed mode's ``server`` service on SQLite in the dev PREFECT_HOME: the
database the ephemeral servers of ``quartet run prefect`` write, so its pages list their runs
too. It asks for the home's credential (basic auth; the UI's login page takes it as
``user:password``): the file holding it is printed, never the credential.
"""

from __future__ import annotations

import os
import time

from core import kit, project
from core.kit import RunFailed, UiRequest, progress
from core.net import free_port
from orchestrators.prefect import (
    CLIENT_AUTH_ENV,
    DEFAULT_UI_PORT,
    NAME,
    api_auth_string,
    auth_file,
)


def serve(request: UiRequest) -> None:
    started = time.perf_counter()
    port = request.port or DEFAULT_UI_PORT
    if free_port(port) != port:
        raise RunFailed(f"port {port} is taken; pass --port")
    from orchestrators.prefect.harness.deploy import server_service
    from orchestrators.prefect.harness.run import LOGGERS

    home = kit.home(NAME)
    server = server_service(port, home=home)
    ui = server.display_url()
    progress.say(
        NAME,
        f"ui: Prefect server on {ui} (SQLite in {home}), one pipeline run, then the deployments "
        "served until Ctrl-C",
    )
    with server.running_context(kit.policy().healthy_timeout_seconds):
        # before Prefect is imported: it reads its settings once
        os.environ["PREFECT_API_URL"] = f"{ui}/api"
        os.environ["PREFECT_UI_URL"] = ui
        os.environ[CLIENT_AUTH_ENV] = api_auth_string(home)  # the flow-run processes inherit it
        from prefect import serve as serve_deployments

        from orchestrators.prefect.deployments import deployments, provision, watch_source
        from orchestrators.prefect.flows import pipeline

        log = progress.orchestrator_log(NAME, LOGGERS)  # after Prefect set up its own logging
        with kit.source_api() as (_url, token):
            provision(token)
            state = pipeline(as_of=request.as_of, return_state=True)
            run_id = state.state_details.flow_run_id
            if state.is_completed():
                progress.say(
                    NAME,
                    f"run {run_id} succeeded in {time.perf_counter() - started:.1f}s; "
                    f"the orchestrator's log: {log}",
                )
            else:
                progress.say(NAME, f"run {run_id} {state.type.value.lower()}: {state.message}")
            progress.say(NAME, f"the run, as a graph:   {ui}/runs/flow-run/{run_id}")
            progress.say(NAME, f"the pipeline's runs:   {ui}/flows/flow/{_flow_id(run_id)}")
            progress.say(
                NAME,
                f"sign in with the contents of {auth_file(home)} (mode 600); "
                f"server log: {server.log}",
            )
            if project.current().freshness_probe:  # (no watcher is deployed without one)
                watch_source()  # records the newest publication that run loaded
            # the flow-run processes served from here write to this terminal: their unit lines
            # and Prefect's warnings and errors; their INFO logs go to the server (each run's
            # Logs tab) instead of three lines per watcher poll here
            os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
            progress.say(NAME, "serving the deployments; Ctrl-C stops everything")
            serve_deployments(*deployments(), print_starting_message=False)


def _flow_id(flow_run_id) -> str:
    """The ``quartet-pipeline`` flow of a run: its page lists every run of the pipeline, the
    ones ``quartet run prefect`` made included."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.read_flow_run(flow_run_id).flow_id)
