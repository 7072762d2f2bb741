"""The plain run, no orchestrator: ``python -m core run [--as-of DATE] [--partition YYYY-MM ...]``
(``quartet run bare`` is the same). The warehouse is ``warehouse/bare.duckdb``, or the PostgreSQL
database ``QUARTET_WAREHOUSE_URL`` names."""

from __future__ import annotations

import argparse
import os
import sys

from core import failures, pipeline, settings
from core.kit import EXIT_FAILED, EXIT_USAGE, validate
from core.kit.command import add_run_flags


def run(as_of: str | None = None, partitions: list[str] | None = None) -> int:
    """The bare run end to end; its exit code (bad input: one message naming the culprit)."""
    try:
        request = validate("bare", as_of, partitions)
    except failures.ConfigError as exc:
        print(f"quartet run bare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        pipeline.run("bare", as_of=request.as_of, partitions=list(request.partitions) or None)
    except failures.KNOWN as exc:
        print(f"quartet run bare failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    add_run_flags(sub.add_parser("run", help="the plain run end to end"))
    args = parser.parse_args(argv)
    if args.warehouse:
        os.environ[settings.WAREHOUSE_URL_ENV] = args.warehouse
    return run(args.as_of, args.partition)
