"""The command line every orchestrator adapter shares: ``python -m orchestrators.<name> VERB``.

An adapter package keeps the files a user of its orchestrator writes at its top and the kit's
file plan in ``harness/``; it hands its package name to :func:`adapter_main`, which parses and
validates the flags once, for all four, then calls the harness module for the verb:

=============  ==================================  ==========================================
verb           ``harness.`` module and function    what it does
=============  ==================================  ==========================================
run            ``run.run(request)``                dev-mode run, the orchestrator's local path
run --deployed ``deploy.submit(request)``          a run submitted to the running services
ui             ``ui.serve(request)``               the orchestrator's UI with a finished run
lineage        ``lineage.declared_graph()``        the graph the orchestrator declares
up/down/status ``deploy.up(request)`` ...          the deployed-mode services
=============  ==================================  ==========================================

A verb's function returns on success and raises on failure; the kit turns a known failure into
one message that names the culprit and a non-zero exit (1: the run failed, 2: bad usage), and
SIGTERM into the same clean stop as Ctrl-C, so every ``with`` block of the adapter (servers,
source API, services) is unwound and nothing it started is left behind.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from core import failures
from core.failures import ConfigError, NotDeployed
from core.ingestion import load_config, parse_date, window
from core.kit.signals import stop_on_signals

EXIT_FAILED = 1
EXIT_USAGE = 2
WAREHOUSE_URL_ENV = "QUARTET_WAREHOUSE_URL"


@dataclass(frozen=True)
class RunRequest:
    """One validated run request: the API clock, the months (empty: the whole range), where to."""

    name: str
    as_of: str | None = None
    partitions: tuple[str, ...] = ()
    warehouse_url: str | None = None
    deployed: bool = False

    @property
    def label(self) -> str:
        from core import project

        return project.current().describe_run(self.partitions, self.as_of)


@dataclass(frozen=True)
class UiRequest:
    name: str
    port: int | None = None
    as_of: str | None = None


def validate(name: str, as_of: str | None, partitions: list[str] | None) -> RunRequest:
    """The one place where ``--as-of`` and ``--partition`` are checked against the config."""
    config = load_config()
    as_of = parse_date("--as-of", as_of) if as_of else None
    months = tuple(partitions or ())
    for month in months or (None,):
        window(config, as_of=as_of, partition=month)
    duplicates = sorted({m for m in months if months.count(m) > 1})
    if duplicates:
        raise ConfigError(f"--partition {duplicates[0]} given twice")
    return RunRequest(name=name, as_of=as_of, partitions=months)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", help="the source API's clock for this run (YYYY-MM-DD)")
    parser.add_argument(
        "--partition",
        action="append",
        metavar="YYYY-MM",
        help="one month (repeatable: a backfill of those months); default: the whole range",
    )
    parser.add_argument(
        "--warehouse",
        metavar="URL",
        help="a postgresql:// warehouse instead of warehouse/<name>.duckdb",
    )


def parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"quartet (python -m orchestrators.{name})",
        description=f"Quartet's pipeline on {name}: dev-mode runs, the UI, lineage, deployed mode.",
    )
    sub = p.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="run the pipeline end to end (dev mode, or --deployed)")
    add_run_flags(run)
    run.add_argument(
        "--deployed", action="store_true", help="submit to the services `up` started and follow"
    )
    ui = sub.add_parser("ui", help="the orchestrator's own UI with a finished run to look at")
    ui.add_argument("--port", type=int)
    ui.add_argument("--as-of", help="clock of the run to look at")
    lin = sub.add_parser("lineage", help="the graph this orchestrator declares, as canonical ids")
    fmt = lin.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--mermaid", action="store_true")
    sub.add_parser("up", help="start the deployed-mode services; return when all are healthy")
    sub.add_parser("down", help="stop every deployed-mode service `up` started")
    status = sub.add_parser("status", help="the deployed-mode services: pid, URL, healthy or not")
    status.add_argument("--json", action="store_true")
    return p


def _module(package: str, name: str):
    """The adapter's harness module for a verb: ``orchestrators.<name>.harness.<module>``."""
    return importlib.import_module(f"{package}.harness.{name}")


def adapter_main(
    package: str,
    argv: list[str] | None = None,
    *,
    before: Callable[[], None] | None = None,
) -> int:
    """Run one verb of the adapter ``package`` (``orchestrators.<name>``); returns the exit code.

    ``before`` runs after the flags are validated and before the adapter's modules are imported
    (Airflow reads its configuration from the environment at import time).
    """
    name = package.rsplit(".", 1)[-1]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    args = parser(name).parse_args(argv)
    stop_on_signals()  # Ctrl-C or SIGTERM: unwind once, stop children
    try:
        if args.verb == "run":
            request = validate(name, args.as_of, args.partition)
            if args.warehouse:
                os.environ[WAREHOUSE_URL_ENV] = args.warehouse
            request = RunRequest(
                name=name,
                as_of=request.as_of,
                partitions=request.partitions,
                warehouse_url=args.warehouse or os.environ.get(WAREHOUSE_URL_ENV),
                deployed=args.deployed,
            )
        elif args.verb == "ui" and args.as_of:
            parse_date("--as-of", args.as_of)
    except ConfigError as exc:
        print(f"quartet {args.verb} {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if before is not None:
        before()
    try:
        return _dispatch(package, name, args, request if args.verb == "run" else None)
    except KeyboardInterrupt:
        print(f"quartet {args.verb} {name}: interrupted; stopped what it started", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `quartet lineage dagster | head`
        sys.stderr.close()
        return 0
    except ConfigError as exc:
        print(f"quartet {args.verb} {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if not failures.is_known(exc):
            traceback.print_exc()
        print(f"quartet {args.verb} {name} failed: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, NotDeployed) else EXIT_FAILED


def _dispatch(package: str, name: str, args: argparse.Namespace, request: RunRequest | None):
    if args.verb == "run":
        assert request is not None
        if request.deployed:
            _module(package, "deploy").submit(request)
        else:
            _module(package, "run").run(request)
        return 0
    if args.verb == "ui":
        _module(package, "ui").serve(UiRequest(name=name, port=args.port, as_of=args.as_of))
        return 0
    if args.verb == "lineage":
        from core import lineage

        graph = _module(package, "lineage").declared_graph()
        fmt = "json" if args.json else "mermaid" if args.mermaid else "text"
        print(lineage.dump(graph, fmt, title=f"{name}: declared lineage"))
        return 0
    deploy = _deploy_module(package, name)
    if args.verb == "up":
        deploy.up()
    elif args.verb == "down":
        deploy.down()
    else:
        status = deploy.status()
        if args.json:
            print(json.dumps(status, indent=2))
        elif not any(state["running"] for state in status.values()):
            print(f"{name}: not up (`quartet up {name}` starts it)")
        else:
            for service, state in status.items():
                health = "healthy" if state["ready"] else "running" if state["running"] else "down"
                print(
                    f"{service:16s} {health:8s} pid {state['pid'] or '-':<8} {state['url'] or ''}"
                )
        return 0 if status and all(s["ready"] for s in status.values()) else EXIT_FAILED
    return 0


def _deploy_module(package: str, name: str):
    try:
        return _module(package, "deploy")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.harness.deploy":
            raise
        raise NotDeployed(f"{name} has no deployed mode yet") from None
