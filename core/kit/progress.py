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
from collections.abc import Callable
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


def attached_tests(manifest: dict) -> dict[str, str]:
    """Each test's unique id -> the unique id of the model it belongs to, by the canonical rule
    (core.lineage): a data test to its ``attached_node`` (else its first parent), a unit test to
    its model. Tests of a source belong to no model (they are counted in the build's total)."""
    owners = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] == "test":
            owner = node.get("attached_node") or (node["depends_on"]["nodes"] or [""])[0]
            if owner.startswith("model."):
                owners[uid] = owner
    for uid, unit_test in manifest.get("unit_tests", {}).items():
        owners[uid] = unit_test["depends_on"]["nodes"][0]
    return owners


class DbtUnits:
    """dbt's node results as units: one line per model, once the model and every test attached
    to it have ended (so the lines come in the order units end, each with its own tests).

    Call it with each node result as dbt reports it (``core.dbt.build(on_node=...)``);
    :meth:`flush` prints what a partial build (a selection, a failure) left open.
    """

    def __init__(self, name: str, manifest: dict, log: Callable[[str], None] = print) -> None:
        self.name, self.log = name, log
        self.owner = attached_tests(manifest)
        self.expected: dict[str, set[str]] = {}
        for test, model in self.owner.items():
            self.expected.setdefault(model, set()).add(test)
        self.models: dict[str, object] = {}
        self.tests: dict[str, list] = {}
        self.printed: set[str] = set()

    def __call__(self, node) -> None:
        if node.resource_type == "model":
            self.models[node.unique_id] = node
            self._maybe_print(node.unique_id)
        elif (model := self.owner.get(node.unique_id)) is not None:
            self.tests.setdefault(model, []).append(node)
            self._maybe_print(model)

    def _maybe_print(self, model: str) -> None:
        ended = {t.unique_id for t in self.tests.get(model, ())}
        if model in self.models and self.expected.get(model, set()) <= ended:
            self._print(model)

    def _print(self, model: str) -> None:
        if model in self.printed:
            return
        self.printed.add(model)
        node, tests = self.models[model], self.tests.get(model, [])
        passed = sum(str(t.status) == "pass" for t in tests)
        details = [rows(node.rows)] if node.rows is not None else []
        if str(node.status) != "success":
            details.append(str(node.status).upper())
        details.append(tests_summary(passed, len(tests) - passed))
        seconds = node.seconds + sum(t.seconds for t in tests)
        detail = ", ".join(d for d in details if d)
        self.log(unit_line(self.name, "dbt", node.name, seconds, detail))

    def flush(self) -> None:
        for model in self.models:
            self._print(model)


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
