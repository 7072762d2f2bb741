"""``quartet ui dagster``: ``dagster dev`` on 127.0.0.1 with the pipeline and a finished run.

``dagster dev`` (webserver, daemon and a code server) runs as a managed service in its own
process group. It stops its children on SIGINT and ignores SIGTERM, so the service is stopped
with SIGINT and then, whatever is left of its group, killed: Ctrl-C or SIGTERM to ``quartet ui
dagster`` leaves no webserver or daemon behind.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
from pathlib import Path

import dagster as dg

from core import kit, settings
from core.kit import UiRequest, progress
from core.net import free_port
from orchestrators.dagster.project import NAME, PROJECT

DEFAULT_PORT = 3000


def first_run_as_of() -> str | None:
    """The clock of the run ``ui`` makes on an empty instance: the last day of the first
    partition, a run worth looking at that takes seconds. None (whatever the source has) for a
    project without a clock or without partitions."""
    partitions = PROJECT.partitions
    if not (PROJECT.clock and partitions.enabled):
        return None
    _, until = partitions.bounds(partitions.first)
    return (dt.date.fromisoformat(until[:10]) - dt.timedelta(days=1)).isoformat()


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


def deep_links(url: str, instance: dg.DagsterInstance) -> list[str]:
    """The pages a newcomer wants, the pipeline's graph first (what ``quartet ui`` lands on).

    The global asset lineage shows every asset from the raw tables to the marts, each with its
    last materialization (the runs' result); the last run's page shows its steps over time; the
    Overview timeline shows every run, those ``quartet run`` made included (run.py gives them
    the code location's origin, without which the timeline leaves them out).
    """
    from orchestrators.dagster.definitions import defs

    base = url.rstrip("/")
    # every asset group opened (the page shows groups folded otherwise): the UI keeps the open
    # groups in ``expanded``, ids ``global@global:<group>`` (groups not split per code location)
    groups = sorted({spec.group_name for spec in defs.resolve_all_asset_specs()})
    expanded = ",".join(f"global@global:{group}" for group in groups)
    lines = [f"pipeline graph (global asset lineage): {base}/asset-groups?expanded={expanded}"]
    runs = instance.get_runs(limit=1)
    if runs:
        run = runs[0]
        lines.append(
            f"last run ({run.job_name}, {run.status.value.lower()}): {base}/runs/{run.run_id}"
        )
    lines.append(f"all runs (Overview timeline): {base}/overview/activity/timeline")
    return lines


def serve(request: UiRequest) -> None:
    from orchestrators.dagster.harness.run import (
        CHATTY_LOGGERS,
        execute,
        stdout_to,
        use_dagster_home,
    )

    home = use_dagster_home()
    port = free_port(request.port or DEFAULT_PORT)
    with kit.source_api() as (url, token):
        os.environ[settings.SOURCE_API_URL_ENV] = url
        os.environ[settings.SOURCE_API_TOKEN_ENV] = token
        with dg.DagsterInstance.get() as instance:
            has_run = bool(instance.get_runs(limit=1))
        if not has_run:
            as_of = request.as_of or first_run_as_of()
            clock = f" as of {as_of}" if as_of else ""
            progress.say(NAME, f"running{clock} first, to have a run to look at")
            log = progress.orchestrator_log(NAME, CHATTY_LOGGERS)
            with stdout_to(log) as terminal:
                execute(as_of=as_of, say=lambda line: print(line, file=terminal, flush=True))
        service = dev_service(port, home)
        with service.running_context(timeout=kit.policy().healthy_timeout_seconds):
            with dg.DagsterInstance.get() as instance:
                for line in deep_links(service.display_url(), instance):
                    progress.say(NAME, line)
            progress.say(
                NAME,
                f"dagster dev's log: {service.log}; DAGSTER_HOME={home}; Ctrl-C stops it",
            )
            stopped = threading.Event()
            while not stopped.wait(1.0):
                if not service.running():
                    raise kit.ServiceError(f"dagster dev {service.exit_reason()}")
