"""Progress a person can follow: one line per unit, the orchestrator's own log in a file.

Every adapter prints the same lines, whatever its orchestrator logs::

    [dagster] ingest  flights                  3.1s  +27,004 rows
    [dagster] dbt     stg_flights              0.4s  27,004 rows, 3 tests passed
    [dagster] run 7c1e... succeeded in 21.4s; the orchestrator's log: .quartet/dagster/logs/run.log

:func:`orchestrator_log` sends the chatty loggers (the orchestrator's DEBUG events, dlt, dbt) to
that file instead of the terminal.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from core import settings


def unit_line(name: str, kind: str, unit: str, seconds: float, detail: str = "") -> str:
    return f"[{name}] {kind:7s} {unit:28s} {seconds:6.1f}s  {detail}".rstrip()


def rows(count: int | None, *, new: bool = False) -> str:
    if count is None:
        return ""
    return f"{count:+,} rows" if new else f"{count:,} rows"


def tests_summary(passed: int, failed: int = 0) -> str:
    if not passed and not failed:
        return ""
    return f"{passed} tests passed" + (f", {failed} FAILED" if failed else "")


def say(name: str, message: str) -> None:
    print(f"[{name}] {message}", file=sys.stdout, flush=True)


def orchestrator_log(name: str, loggers: tuple[str, ...] = ()) -> Path:
    """Route the root logger and ``loggers`` to ``.quartet/<name>/logs/run.log``; return it.

    Warnings and errors still reach the terminal (stderr), so a failure is never silent.
    """
    path = settings.log_dir(name) / "run.log"
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.setFormatter(logging.Formatter(f"[{name}] %(levelname)s %(name)s: %(message)s"))
    for logger_name in ("", *loggers):
        logger = logging.getLogger(logger_name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                logger.removeHandler(handler)
        logger.addHandler(to_file)
        if logger_name == "":
            logger.addHandler(to_terminal)
            logger.setLevel(min(logger.level or logging.INFO, logging.INFO))
        else:
            logger.propagate = False
            logger.addHandler(to_terminal)
    return path
