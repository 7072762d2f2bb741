"""``python -m orchestrators.temporal run|ui|lineage|worker`` (``quartet run|ui|lineage temporal``).

* ``run [--as-of DATE] [--partition YYYY-MM ...] [--job full|ingest|transform]``: a dev server
  (or TEMPORAL_ADDRESS), a worker in this process, one workflow to completion; exit 0 only when
  it completed, dbt tests included. Several partitions: a backfill, one child workflow per month.
* ``ui [--port N] [--as-of DATE]``: the dev server with its UI (8233 unless taken), a worker,
  the monthly Schedule, the source watcher and one finished run; Ctrl-C stops everything.
* ``lineage [--json|--mermaid]``: the graph of the workflow plan (what the workflow schedules).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from orchestrators.temporal import PIPELINE, TASK_QUEUE, WAREHOUSE_TASK_QUEUE

EXIT_FAILED = 1
EXIT_USAGE = 2


def _request(args: argparse.Namespace):
    from orchestrators.temporal.workflows import BackfillInput, PipelineInput

    partitions = args.partition or []
    if len(partitions) > 1:
        return BackfillInput(partitions, as_of=args.as_of, job=args.job)
    return PipelineInput(args.job, args.as_of, partitions[0] if partitions else None)


@contextlib.asynccontextmanager
async def _deployment(*, ui: bool, ui_port: int | None = None):
    """Source API, Temporal server and this process's worker; yields (client, server)."""
    from core.ingestion import load_config
    from core.source_api import SourceAPIConfig, running_source_api
    from orchestrators.temporal.activities import PipelineActivities
    from orchestrators.temporal.server import dev_server
    from orchestrators.temporal.starter import connect
    from orchestrators.temporal.worker import workers

    config = load_config()
    api = SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )
    with (
        running_source_api(api) as (url, token),
        dev_server(ui=ui, ui_port=ui_port) as server,
        ThreadPoolExecutor(max_workers=4) as executor,
    ):
        client = await connect(server.address)
        queue_worker, warehouse_worker = workers(
            client, PipelineActivities(url, token, ui_url=server.ui_url), executor
        )
        async with queue_worker, warehouse_worker:
            yield client, server


async def _run(request) -> int:
    from temporalio.client import WorkflowFailureError

    from orchestrators.temporal.starter import start

    async with _deployment(ui=False) as (client, server):
        handle = await start(client, request)
        print(f"[{PIPELINE}] workflow {handle.id} on {server.address}", flush=True)
        try:
            result = await handle.result()
        except WorkflowFailureError as exc:
            print(f"[{PIPELINE}] workflow {handle.id} failed: {exc.cause}", file=sys.stderr)
            return EXIT_FAILED
    runs = result if isinstance(result, list) else [result]
    for run in runs:
        ingested = ", ".join(f"{i.resource} {i.new_rows:+,}" for i in run.ingested)
        built = sum(len(b.nodes) for b in run.built)
        label = run.partition or "all"
        print(f"[{PIPELINE}] {label}: ingested {ingested or '-'}; dbt nodes built/tested: {built}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from core.ingestion import ConfigError, load_config, window

    try:
        config = load_config()
        for partition in args.partition or [None]:
            window(config, as_of=args.as_of, partition=partition)
    except ConfigError as exc:
        print(f"[{PIPELINE}] {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_run(_request(args)))


async def _ui(args: argparse.Namespace) -> int:
    from temporalio.client import WorkflowFailureError

    from orchestrators.temporal.starter import ensure_schedule, start, start_watcher
    from orchestrators.temporal.workflows import PipelineInput

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with _deployment(ui=True, ui_port=args.port) as (client, server):
        await ensure_schedule(client)
        await start_watcher(client)
        handle = await start(client, PipelineInput(as_of=args.as_of))
        print(f"[{PIPELINE}] {server.ui_url} is up; running {handle.id} ...", flush=True)
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            print(f"[{PIPELINE}] workflow {handle.id} failed: {exc.cause}", file=sys.stderr)
        print(
            f"Temporal UI: {server.ui_url}/namespaces/default/workflows (server {server.address}; "
            f"worker on {TASK_QUEUE} + {WAREHOUSE_TASK_QUEUE}). Ctrl-C stops everything.",
            flush=True,
        )
        await stop.wait()
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    return asyncio.run(_ui(args))


def plan_graph():
    """The workflow plan as a core.lineage.Graph: its activities mapped onto canonical ids."""
    from core import lineage, settings
    from orchestrators.temporal.activities import build_plan

    plan = build_plan()
    graph = lineage.Graph()
    for resource in plan.resources:
        graph.nodes[f"{settings.RAW_SCHEMA}.{resource}"] = "raw"
    for node, tests in plan.raw_tests.items():
        graph.tests[node] = set(tests)
    for step in plan.models:
        graph.nodes[step.name] = step.layer
        graph.edges |= {(parent, step.name) for parent in step.upstream}
        if step.tests:
            graph.tests[step.name] = set(step.tests)
    return graph


def cmd_lineage(args: argparse.Namespace) -> int:
    from core import lineage

    fmt = "json" if args.json else "mermaid" if args.mermaid else "text"
    print(lineage.dump(plan_graph(), fmt, title="temporal workflow plan"))
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from orchestrators.temporal.worker import main

    asyncio.run(main())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrators.temporal", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline as a workflow, headless")
    run.add_argument("--as-of", help="the source API's clock for this run (YYYY-MM-DD)")
    run.add_argument("--partition", action="append", help="a month YYYY-MM (repeatable)")
    run.add_argument("--job", choices=["full", "ingest", "transform"], default="full")
    run.set_defaults(func=cmd_run)
    ui = sub.add_parser("ui", help="the Temporal UI with a worker, the schedule and a finished run")
    ui.add_argument("--port", type=int, help="UI port (default 8233, a free one if taken)")
    ui.add_argument("--as-of", help="the source API's clock of the run to look at")
    ui.set_defaults(func=cmd_ui)
    lin = sub.add_parser("lineage", help="the graph the workflow plan declares")
    group = lin.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--mermaid", action="store_true")
    lin.set_defaults(func=cmd_lineage)
    worker = sub.add_parser("worker", help="a worker for the server at TEMPORAL_ADDRESS")
    worker.set_defaults(func=cmd_worker)
    return p


def _show_activity_logs() -> None:
    """Print what activities log (ingested rows, each dbt node) as the run goes."""
    from temporalio import activity

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(activity.logger.logger.name)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False  # once, whatever dlt configured on the root logger
    activity.logger.activity_info_on_message = False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _show_activity_logs()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
