"""What the flows report: the alert of a failed run (a state hook) and one progress line per
unit, on this process's stdout and in the run's log on the server."""

from __future__ import annotations

import logging

from prefect.client.schemas.objects import Flow, FlowRun, State
from prefect.logging.handlers import APILogHandler
from prefect.utilities.urls import url_for

from core import alerts, lineage
from core.kit import progress
from orchestrators.prefect import NAME

#: the logger of the unit lines: to the run's log on the server only (see :func:`unit_done`)
UNITS_LOGGER = "quartet.units"


def alert_on_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_failure hook: one alert per failed top-level run (a failed subflow fails its parent)."""
    if flow_run.parent_task_run_id is not None:
        return
    payload = alerts.alert_payload(
        NAME, flow.name, str(flow_run.id), state.message or str(state.type), url_for(flow_run)
    )
    alerts.send_alert(payload)


def unit_done(line: str) -> None:
    """A unit's progress line: once on this process's stdout, and in the run's log on the server
    (where ``quartet run prefect --deployed`` reads it and the UI shows it).

    Not through ``get_run_logger()``: its records also reach Prefect's console handler, and the
    line came out twice wherever that handler writes to the same terminal (``quartet ui``, the
    flow-run processes it serves).
    """
    print(line, flush=True)
    _units_logger().info(line)


def ingested(resource: str, partition: str | None, seconds: float, new_rows: int) -> None:
    unit = f"{resource} {partition or ''}".strip()
    unit_done(progress.unit_line(NAME, "ingest", unit, seconds, progress.rows(new_rows, new=True)))


def built(results) -> None:
    """One progress line per model with its rows and how many of its tests passed."""
    graph = lineage.canonical()
    by_name = {r.node.name: r for r in results}
    for model in graph.order():
        result = by_name.get(model)
        if result is None:
            continue
        tests = [by_name[t] for t in graph.tests.get(model, ()) if t in by_name]
        passed = sum(str(t.status) == "pass" for t in tests)
        rows = (result.adapter_response or {}).get("rows_affected")
        detail = ", ".join(
            p
            for p in (progress.rows(rows), progress.tests_summary(passed, len(tests) - passed))
            if p
        )
        seconds = result.execution_time or 0.0
        unit_done(progress.unit_line(NAME, "dbt", model, seconds, detail))


def _units_logger() -> logging.Logger:
    logger = logging.getLogger(UNITS_LOGGER)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())  # it finds the flow or task run in the run context
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
