"""Activities: synchronous functions on the worker's thread pool, each a thin call into core/.

One dataclass input each. The source API's URL and token are the worker's configuration (held by
:class:`PipelineActivities`), never an activity input, so they never reach workflow history.
dlt and dbt are imported inside the activities that use them, so importing this module (the
workflow sandbox passes it through, the CLI reads the dataclasses) stays light.

A failure leaves an activity as an ``ApplicationError`` whose ``non_retryable`` is core's answer
to "may a retry help?" (:func:`core.failures.may_retry`): bad input ends the run at once,
everything else is left to the workflow's retry policy.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gc
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, TemporalError

from core.failures import DbtBuildError, may_retry
from orchestrators.temporal import PIPELINE
from orchestrators.temporal.plan import Plan, build_plan

# -- inputs and outputs ----------------------------------------------------------------------


@dataclass
class PlanInput:
    as_of: str | None = None
    partition: str | None = None


@dataclass
class IngestInput:
    resource: str
    as_of: str | None = None
    partition: str | None = None


@dataclass
class IngestOutput:
    resource: str
    rows_fetched: int
    new_rows: int
    seconds: float


@dataclass
class BuildModelInput:
    model: str
    tests: list[str] = field(default_factory=list)  # its own tests and those of its raw tables


@dataclass
class NodeOutcome:
    name: str
    resource_type: str
    status: str
    seconds: float
    rows: int | None = None


@dataclass
class BuildModelOutput:
    model: str
    nodes: list[NodeOutcome]
    seconds: float


@dataclass
class SourceStatus:
    as_of: str  # the source's newest publication, e.g. 2013-01-31T23:59:59


@dataclass
class AlertInput:
    pipeline: str
    workflow_id: str
    run_id: str
    error: str


class PipelineActivities:
    """The activities of one worker, configured with the source API it reads from."""

    def __init__(self, api_url: str, api_token: str, ui_url: str | None = None) -> None:
        self._api_url = api_url
        self._api_token = api_token  # worker configuration only: never an input, never logged
        self._ui_url = ui_url

    @activity.defn
    def plan(self, request: PlanInput) -> Plan:
        """Validate the run's flags and read the plan from the canonical graph."""
        from core.ingestion import load_config, window

        with failures_mapped():
            window(load_config(), as_of=request.as_of, partition=request.partition)
            return build_plan()

    @activity.defn
    def ingest_resource(self, request: IngestInput) -> IngestOutput:
        """Load one dlt resource (one raw table) for the run's window, holding the writer lock."""
        from core.ingestion import load_config, window
        from core.pipeline import ingest

        with failures_mapped():
            config = load_config()
            only = window(config, as_of=request.as_of, partition=request.partition)
            with heartbeating(lambda: f"loading {request.resource}"):
                result = ingest(
                    PIPELINE,
                    only.only(request.resource),
                    base_url=self._api_url,
                    token=self._api_token,
                    config=config,
                    log=activity.logger.info,
                )
            # dlt's normalize process pool leaves semaphores in reference cycles: collected here,
            # their finalizers run in this thread, not in a later workflow activation, where the
            # sandbox refuses the imports they make (and every log line they would then write)
            gc.collect()
        return IngestOutput(
            resource=request.resource,
            rows_fetched=result.rows_fetched.get(request.resource, 0),
            new_rows=result.new_rows.get(request.resource, 0),
            seconds=round(result.seconds, 2),
        )

    @activity.defn
    def build_model(self, request: BuildModelInput) -> BuildModelOutput:
        """``dbt build`` of one model and exactly the tests named; heartbeats carry its progress.

        A failed model or test is core's ``DbtBuildError`` with the failed nodes as details (the
        workflow reports them with the models it then skipped).
        """
        from core.pipeline import transform

        done: list[str] = []

        def log(message: str) -> None:
            activity.logger.info(message)
            done.append(message.strip())

        with failures_mapped(), heartbeating(lambda: done[-3:]), _only_selected_tests():
            result = transform(PIPELINE, select=[request.model, *request.tests], log=log)
        return BuildModelOutput(
            model=request.model,
            nodes=[
                NodeOutcome(n.name, n.resource_type, str(n.status), round(n.seconds, 3), n.rows)
                for n in result.nodes
            ],
            seconds=round(result.seconds, 2),
        )

    @activity.defn
    def source_status(self) -> SourceStatus:
        """The source's newest publication, from the project's freshness probe (what the
        watcher workflow polls)."""
        from core import project

        probe = project.freshness(project.current())
        with failures_mapped():
            published = probe(self._api_url, self._api_token)
        return SourceStatus(as_of=published)

    @activity.defn
    def send_failure_alert(self, request: AlertInput) -> bool:
        """POST the failure to ALERT_WEBHOOK_URL (if set) with a link into the Temporal UI."""
        from core.alerts import alert_payload, send_alert

        url = None
        if self._ui_url:
            url = (
                f"{self._ui_url}/namespaces/{activity.info().workflow_namespace}/workflows/"
                f"{request.workflow_id}/{request.run_id}/history"
            )
        payload = alert_payload(
            "temporal",
            request.pipeline,
            f"{request.workflow_id}/{request.run_id}",
            request.error,
            url,
        )
        with failures_mapped():
            return send_alert(payload)


# -- the failure policy in Temporal's words ---------------------------------------------------


def application_error(exc: BaseException) -> ApplicationError:
    """``exc`` as the activity's failure: non-retryable when core says no retry helps; a failed
    dbt build carries its failed nodes as details."""
    details = []
    if isinstance(exc, DbtBuildError):
        details = [{**dataclasses.asdict(n), "status": str(n.status)} for n in exc.failures]
    return ApplicationError(
        str(exc), *details, type=type(exc).__name__, non_retryable=not may_retry(exc)
    )


@contextlib.contextmanager
def failures_mapped() -> Iterator[None]:
    """Raise what fails inside as :func:`application_error`; Temporal's own errors (a
    cancellation raised into the activity's thread) pass unchanged."""
    try:
        yield
    except TemporalError:
        raise
    except Exception as exc:
        raise application_error(exc) from None


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def heartbeating(details: Callable[[], Any] = lambda: None) -> Iterator[None]:
    """Heartbeat while a blocking call (dlt, dbt, waiting for the warehouse) runs.

    Three beats per heartbeat timeout (which the workflow sets from the policy), so one delayed
    beat never makes a live worker look dead.
    """
    timeout = activity.info().heartbeat_timeout
    every = max(timeout.total_seconds() / 3, 0.2) if timeout else 5.0
    stop = threading.Event()

    def beat() -> None:
        activity.heartbeat(details())  # at once: the server shows what the activity does
        while not stop.wait(every):
            activity.heartbeat(details())

    # the activity's context lives in a contextvar: the beating thread runs in a copy of it
    beater = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()


_SELECTION_LOCK = threading.Lock()


@contextlib.contextmanager
def _only_selected_tests() -> Iterator[None]:
    """dbt selects exactly the model and the tests named (no tests of other models)."""
    with _SELECTION_LOCK:
        previous = os.environ.get("DBT_INDIRECT_SELECTION")
        os.environ["DBT_INDIRECT_SELECTION"] = "empty"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("DBT_INDIRECT_SELECTION", None)
            else:
                os.environ["DBT_INDIRECT_SELECTION"] = previous
