"""``python -m orchestrators.airflow run|ui|lineage``: Quartet on Airflow 3 (see README.md)."""

from __future__ import annotations

import argparse
import contextlib
import sys

from orchestrators.airflow import NAME, PIPELINE_DAG, environment


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrators.airflow.runner import run

    return 0 if run(as_of=args.as_of, partitions=args.partition or [None]) else 1


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrators.airflow.ui import serve

    return serve(port=args.port, as_of=args.as_of)


def cmd_lineage(args: argparse.Namespace) -> int:
    from core.lineage import dump
    from orchestrators.airflow.lineage import declared

    fmt = "json" if args.json else "mermaid" if args.mermaid else "text"
    with contextlib.redirect_stdout(sys.stderr):  # Airflow's parsing logs go to stdout
        graph = declared()
    print(dump(graph, fmt, title=f"{NAME}: {PIPELINE_DAG}"))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrators.airflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="airflow db migrate, then dag.test() of quartet_pipeline")
    run.add_argument("--as-of", help="the source API's clock for this run (YYYY-MM-DD)")
    run.add_argument("--partition", action="append", help="a month YYYY-MM (repeatable)")
    run.set_defaults(func=cmd_run)
    ui = sub.add_parser("ui", help="api-server + scheduler + dag-processor on 127.0.0.1")
    ui.add_argument("--port", type=int, default=8080)
    ui.add_argument("--as-of", default="2013-01-31", help="clock of the run to look at")
    ui.set_defaults(func=cmd_ui)
    lineage = sub.add_parser("lineage", help="the Asset graph the DAG declares")
    group = lineage.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--mermaid", action="store_true")
    lineage.set_defaults(func=cmd_lineage)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    environment.configure()  # before anything imports Airflow
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
