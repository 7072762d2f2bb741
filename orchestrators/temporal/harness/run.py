"""Dev mode: ``quartet run temporal`` - a dev server, a worker in this process, one workflow.

The server is TEMPORAL_ADDRESS when set; else the dev server a running ``quartet ui temporal``
owns (so the run shows up there); else one started here on the SQLite file of the home and
stopped at the end. The run is followed unit by unit; activities, dlt and dbt log to
``.quartet/temporal/logs/run.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from core import kit, settings
from core.kit import progress
from core.net import free_port
from orchestrators.temporal import ADDRESS_ENV, PIPELINE, UI_URL_ENV
from orchestrators.temporal.starter import Request
from orchestrators.temporal.workflows import BackfillInput, PipelineWorkflow, Unit


@dataclass
class Server:
    address: str  # host:port of the frontend (gRPC)
    ui_url: str | None


@contextlib.contextmanager
def dev_server(*, ui_port: int | None = None, ui: bool = False) -> Iterator[Server]:
    """The server for a dev-mode command (see the module's docstring); stopped when it ends."""
    from orchestrators.temporal.harness.deploy import UI_PORT, temporal_server

    if os.environ.get(ADDRESS_ENV):
        yield Server(os.environ[ADDRESS_ENV], os.environ.get(UI_URL_ENV))
        return
    home = kit.home(PIPELINE)
    published = home / "server.json"  # who owns the SQLite file, and where it listens
    with open(home / "server.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            kit.wait_until(published.exists, what=f"the dev server of {home}", timeout=60)
            info = json.loads(published.read_text())
            progress.say(PIPELINE, f"using the dev server already running at {info['address']}")
            yield Server(info["address"], info["ui_url"])
            return
        _stop_orphan(published)
        service = temporal_server(
            home / "temporal.db",
            kit.log_dir(PIPELINE) / "dev-server.log",
            port=free_port(),
            ui_port=free_port(ui_port or UI_PORT) if ui else None,
        )
        with service.running_context(kit.policy().healthy_timeout_seconds):
            address = service.argv[service.argv.index("--port") + 1]
            server = Server(f"127.0.0.1:{address}", service.url if ui else None)
            published.write_text(
                json.dumps(
                    {
                        "address": server.address,
                        "ui_url": server.ui_url,
                        "pid": service.pid,
                        "started_at": service.started_at,
                    }
                )
            )
            try:
                yield server
            finally:
                published.unlink(missing_ok=True)


def _stop_orphan(published: Path) -> None:
    """Stop the dev server of a command that was killed (kill -9 leaves its server running, in
    its own process group, on the SQLite file this command is about to use)."""
    try:
        info = json.loads(published.read_text())
    except (OSError, ValueError):
        return
    if info.get("pid"):
        orphan = kit.Service("dev server", [], published.with_name("dev-server.log"))
        orphan.pid, orphan.started_at = info["pid"], info.get("started_at")
        if orphan.running():  # the very process that was started, not a recycled pid
            progress.say(
                PIPELINE, f"stopping the dev server a killed command left (pid {orphan.pid})"
            )
            orphan.stop()


async def run_here(request: kit.RunRequest, server: Server, url: str, token: str) -> None:
    """Start the workflow, with this process's worker polling, and follow it to its end."""
    from orchestrators.temporal.activities import PipelineActivities
    from orchestrators.temporal.starter import start, workflow_id, workflow_input
    from orchestrators.temporal.worker import warm_imports, workers

    run = workflow_input(request)  # a policy Temporal cannot honour is refused before the worker
    warm_imports()
    client = await connect(server.address)
    async with workers(client, PipelineActivities(url, token, ui_url=server.ui_url)):
        # a dev-mode run's worker dies with its command: a new command replaces such a run, and
        # says so in the run it replaces (its command fails naming this one, not silently)
        await terminate_running(
            client,
            workflow_id(run),
            f"replaced by a newer `quartet run temporal` (PID {os.getpid()})",
        )
        handle = await start(client, run, conflict=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
        progress.say(PIPELINE, f"workflow {handle.id} on {server.address} ({request.label})")
        await follow(client, handle, run)


def run(request: kit.RunRequest) -> None:
    from orchestrators.temporal.starter import configured_policy

    configured_policy()  # refused by name (exit 2) before a server or worker starts
    log = progress.orchestrator_log(PIPELINE, ("temporalio", "dlt", "dbt"))
    with kit.source_api() as (url, token), dev_server() as server:
        asyncio.run(run_here(request, server, url, token))
    progress.say(PIPELINE, f"run succeeded; the orchestrator's log: {settings.shown_path(log)}")


# -- following a run: one line per unit as it ends ------------------------------------------


async def connect(address: str, timeout: float = 60.0) -> Client:
    """Connect, waiting for a server that is still starting."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def terminate_running(client: Client, workflow: str, reason: str) -> None:
    """Terminate the run of ``workflow`` that is still running, if any, giving ``reason``."""
    handle = client.get_workflow_handle(workflow)
    try:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason=reason)
    except RPCError:  # no such workflow yet, or it closed meanwhile
        pass


async def follow(
    client: Client,
    handle: WorkflowHandle,
    request: Request,
    *,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> None:
    """Print one line per unit as the run goes; return on success, raise kit.RunFailed on failure."""
    runs = (
        [(p, client.get_workflow_handle(f"{handle.id}/{p}")) for p in request.partitions]
        if isinstance(request, BackfillInput)
        else [(request.partition, handle)]
    )
    poll = kit.policy().follow_poll_seconds
    for partition, run in runs:
        shown: set[str] = set()
        while True:
            closed = await _closed(run)  # then one last look at its units
            units = await _progress(run)
            ended = sorted(
                (unit.ended, name)
                for name, unit in units.items()
                if unit.state in ("done", "failed", "skipped") and name not in shown
            )
            for _, name in ended:  # in the order the units ended: a model after its parents
                unit = units[name]
                shown.add(name)
                detail = unit.detail if unit.state == "done" else unit.state.upper()
                label = f"{name} [{partition}]" if len(runs) > 1 else name
                say(progress.unit_line(PIPELINE, unit.kind, label, unit.seconds or 0.0, detail))
            if closed:
                break
            await asyncio.sleep(poll)
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        while getattr(cause, "cause", None) is not None:
            cause = cause.cause
        raise kit.RunFailed(
            f"workflow {handle.id} failed: {getattr(cause, 'message', cause)}\n  its history: temporal workflow show "
            f"--workflow-id {handle.id} (or the Temporal UI)"
        ) from None


async def _progress(handle: WorkflowHandle) -> dict[str, Unit]:
    try:
        return await handle.query(PipelineWorkflow.progress)
    except RPCError:  # not started yet, or no worker has picked it up
        return {}
    except Exception:  # a closed run whose worker is gone cannot answer
        return {}


async def _closed(handle: WorkflowHandle) -> bool:
    try:
        return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
    except RPCError:  # a backfill's child that does not exist yet
        return False
