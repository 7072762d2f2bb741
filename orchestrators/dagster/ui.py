"""``quartet ui dagster``: ``dagster dev`` on 127.0.0.1 with the pipeline and a finished run.

``dagster dev`` (webserver, daemon and a code server) runs as a managed service in its own
process group. It stops its children on SIGINT and ignores SIGTERM, so the service is stopped
with SIGINT and then, whatever is left of its group, killed: Ctrl-C or SIGTERM to ``quartet ui
dagster`` leaves no webserver or daemon behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import dagster as dg

from core import kit, settings
from core.kit import UiRequest, progress
from core.net import free_port
from orchestrators.dagster.project import NAME, use_dagster_home

DEFAULT_PORT = 3000
FIRST_RUN_AS_OF = "2013-01-31"


def dev_service(port: int, home: Path) -> kit.Service:
    url = f"http://127.0.0.1:{port}"
    return kit.Service(
        name="dagster-dev",
        argv=[
            str(Path(sys.executable).parent / "dagster"),
            *("dev", "-m", "orchestrators.dagster.definitions", "-h", "127.0.0.1", "-p", str(port)),
        ],
        log=kit.log_dir(NAME) / "dagster-dev.log",
        ready=f"{url}/server_info",
        url=url,
        env={"DAGSTER_HOME": str(home), "QUARTET_DAGSTER_URL": url},
        stop_signal=signal.SIGINT,  # dagster dev stops webserver, daemon and code server on SIGINT
        stop_timeout=30,
    )


def serve(request: UiRequest) -> None:
    from orchestrators.dagster.run import execute

    home = use_dagster_home()
    port = free_port(request.port or DEFAULT_PORT)
    with kit.source_api() as (url, token):
        os.environ[settings.SOURCE_API_URL_ENV] = url
        os.environ[settings.SOURCE_API_TOKEN_ENV] = token
        with dg.DagsterInstance.get() as instance:
            has_run = bool(instance.get_runs(limit=1))
        if not has_run:
            as_of = request.as_of or FIRST_RUN_AS_OF
            progress.say(NAME, f"running as of {as_of} first, to have a run to look at")
            progress.orchestrator_log(NAME, ("dagster", "dlt", "dbt"))
            execute(as_of=as_of, say=lambda line: print(line, flush=True))
        service = dev_service(port, home)
        with service.running_context(timeout=kit.policy().healthy_timeout_seconds):
            progress.say(NAME, f"DAGSTER_HOME={home}")
            progress.say(
                NAME, f"UI: {service.display_url()}  (log: {service.log}; Ctrl-C stops it)"
            )
            stopped = threading.Event()
            while not stopped.wait(1.0):
                if not service.running():
                    raise kit.ServiceError(f"dagster dev {service.exit_reason()}")
