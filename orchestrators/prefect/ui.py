"""``quartet ui prefect``: Prefect's server and UI on 127.0.0.1, one pipeline run to look at,
then the deployments served from this process until Ctrl-C (or SIGTERM) stops everything.

The server is the deployed mode's ``server`` service on SQLite in the dev PREFECT_HOME.
"""

from __future__ import annotations

import os
import sys

from core import kit
from core.kit import RunFailed, UiRequest
from core.net import free_port
from orchestrators.prefect import DEFAULT_UI_PORT, NAME


def serve(request: UiRequest) -> None:
    port = request.port or DEFAULT_UI_PORT
    if free_port(port) != port:
        raise RunFailed(f"port {port} is taken; pass --port")
    from orchestrators.prefect.deploy import server_service

    server = server_service(port, home=kit.home(NAME))
    with server.running_context(kit.policy().healthy_timeout_seconds):
        api_url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = api_url
        os.environ["PREFECT_UI_URL"] = server.display_url()
        from prefect import serve as serve_deployments

        from orchestrators.prefect.deployments import deployments, provision, watch_source
        from orchestrators.prefect.flows import pipeline

        kit.progress.say(NAME, f"Prefect UI: {server.display_url()}  (log: {server.log})")
        with kit.source_api() as (_url, token):
            provision(token)
            state = pipeline(as_of=request.as_of, return_state=True)
            if not state.is_completed():
                print(
                    f"the first pipeline run failed (see the UI): {state.message}", file=sys.stderr
                )
            watch_source()  # records the watermark that run loaded
            kit.progress.say(NAME, "serving the deployments; Ctrl-C stops everything")
            serve_deployments(*deployments())
