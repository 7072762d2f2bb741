"""``python -m orchestrators.dagster run|ui|lineage`` (what ``quartet run|ui|lineage dagster`` calls)."""

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrators.dagster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="headless run of the full_pipeline job (no webserver)")
    run.add_argument("--as-of", help="the source API's clock for this run (YYYY-MM-DD)")
    run.add_argument(
        "--partition",
        action="append",
        default=[],
        help="a month YYYY-MM, one run each (repeatable); default: all months in one run",
    )
    ui = sub.add_parser("ui", help="dagster dev on 127.0.0.1 (default port 3000)")
    ui.add_argument("--port", type=int)
    ui.add_argument("--as-of", default="2013-01-31", help="clock of the first run, if none yet")
    lin = sub.add_parser("lineage", help="the asset graph Dagster declares, as canonical ids")
    fmt = lin.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--mermaid", action="store_true")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from orchestrators.dagster import commands

    if args.command == "run":
        return commands.run(as_of=args.as_of, partitions=args.partition)
    if args.command == "ui":
        return commands.ui(args.port, as_of=args.as_of)
    return commands.lineage("json" if args.json else "mermaid" if args.mermaid else "text")


if __name__ == "__main__":
    sys.exit(main())
