"""Activities: synchronous functions on the worker's thread pool, each a thin call into core/.

One dataclass input each. The source API's URL and token are the worker's configuration (held by
:class:`PipelineActivities`), never an activity input, so they never reach workflow history.
dlt and dbt are imported inside the activities that use them, so importing this module (the
workflow sandbox passes it through, the CLI reads the dataclasses) stays light.

Errors no retry fixes (bad flags, a malformed record, a rejected token, a failing dbt test) are
raised as non-retryable ``ApplicationError``; everything else is left to the retry policy.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import settings
from orchestrators.temporal import PIPELINE

#: error types the workflow's retry policy never retries
NON_RETRYABLE = ["ConfigError", "DbtBuildError", "MalformedRecordError", "AuthError"]


# -- inputs and outputs ----------------------------------------------------------------------


@dataclass
class PlanInput:
    as_of: str | None = None
    partition: str | None = None


@dataclass
class ModelStep:
    """One dbt model: built with its tests in one activity, after ``after`` (canonical ids)."""

    name: str
    layer: str
    upstream: list[str]  # lineage parents: raw.<table> and models
    after: list[str]  # upstream models plus models its tests also read (relationships)
    tests: list[str]  # data tests and unit tests attached to the model
    source_tests: list[str] = field(default_factory=list)  # tests of its raw tables, run first


@dataclass
class Plan:
    """What the workflow schedules, from core's canonical graph (dlt schema + dbt manifest)."""

    resources: list[str]
    raw_tests: dict[str, list[str]]  # raw.<table> -> source tests (run with their models)
    models: list[ModelStep]  # dependency order


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
    as_of: str  # the API clock, e.g. 2013-01-31T23:59:59
    watermark: str | None


@dataclass
class AlertInput:
    pipeline: str
    workflow_id: str
    run_id: str
    error: str


# -- the plan (also what ``lineage`` prints) --------------------------------------------------


def build_plan() -> Plan:
    """The workflow plan: one ingestion per dlt resource, one build per dbt model in DAG order."""
    from core import dbt, lineage

    manifest = dbt.load_manifest()
    graph = lineage.canonical(manifest)
    models = {n: layer for n, layer in graph.nodes.items() if layer != "raw"}
    upstream = {m: sorted(a for a, b in graph.edges if b == m) for m in models}
    after = {m: {u for u in upstream[m] if u in models} for m in models}
    for node in manifest["nodes"].values():  # a test runs once every model it reads is built
        attached = node.get("attached_node")
        if node["resource_type"] == "test" and attached:
            owner = lineage.dbt_node_id(manifest, attached)
            if owner in models:
                parents = {lineage.dbt_node_id(manifest, p) for p in node["depends_on"]["nodes"]}
                after[owner] |= (parents & set(models)) - {owner}
    order = lineage.Graph(
        nodes=models, edges={(a, m) for m, parents in after.items() for a in parents}
    ).order()
    raw_nodes = sorted(n for n, layer in graph.nodes.items() if layer == "raw")
    return Plan(
        resources=[n.removeprefix(f"{settings.RAW_SCHEMA}.") for n in raw_nodes],
        raw_tests={n: sorted(graph.tests.get(n, ())) for n in raw_nodes if graph.tests.get(n)},
        models=[
            ModelStep(
                name=m,
                layer=models[m],
                upstream=upstream[m],
                after=sorted(after[m]),
                tests=sorted(graph.tests.get(m, ())),
                source_tests=sorted(
                    t for u in upstream[m] if u in raw_nodes for t in graph.tests.get(u, ())
                ),
            )
            for m in order
        ],
    )


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


def _bad_input(exc: Exception, kind: str | None = None) -> ApplicationError:
    return ApplicationError(str(exc), type=kind or type(exc).__name__, non_retryable=True)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def ingestion_failure(exc: Exception) -> ApplicationError:
    """A non-retryable error when no retry can fix it (bad data, a rejected token)."""
    from core.source import MalformedRecordError

    if any(isinstance(cause, MalformedRecordError) for cause in _causes(exc)):
        return _bad_input(exc, "MalformedRecordError")
    if "401" in str(exc):
        return _bad_input(exc, "AuthError")
    return ApplicationError(str(exc), type=type(exc).__name__)  # transient: retried


class PipelineActivities:
    """The activities of one worker, configured with the source API it reads from."""

    def __init__(self, api_url: str, api_token: str, ui_url: str | None = None) -> None:
        self._api_url = api_url
        self._api_token = api_token  # worker configuration only: never an input, never logged
        self._ui_url = ui_url

    @activity.defn
    def plan(self, request: PlanInput) -> Plan:
        """Validate the run's flags and read the plan from the canonical graph."""
        from core.ingestion import ConfigError, load_config, window

        try:
            window(load_config(), as_of=request.as_of, partition=request.partition)
        except ConfigError as exc:
            raise _bad_input(exc) from None
        return build_plan()

    @activity.defn
    def ingest_resource(self, request: IngestInput) -> IngestOutput:
        """Load one dlt resource (one raw table) for the run's window, holding the writer lock."""
        from core.ingestion import ConfigError, load_config, window
        from core.pipeline import IngestionError, ingest

        try:
            config = load_config()
            run_window = window(config, as_of=request.as_of, partition=request.partition).only(
                request.resource
            )
        except ConfigError as exc:
            raise _bad_input(exc) from None
        try:
            with heartbeating(lambda: f"loading {request.resource}"):
                result = ingest(
                    PIPELINE,
                    run_window,
                    base_url=self._api_url,
                    token=self._api_token,
                    config=config,
                    log=activity.logger.info,
                )
        except IngestionError as exc:
            raise ingestion_failure(exc) from None
        return IngestOutput(
            resource=request.resource,
            rows_fetched=result.rows_fetched.get(request.resource, 0),
            new_rows=result.new_rows.get(request.resource, 0),
            seconds=round(result.seconds, 2),
        )

    @activity.defn
    def build_model(self, request: BuildModelInput) -> BuildModelOutput:
        """``dbt build`` of one model and exactly its tests; heartbeats carry per-node progress.

        A failed model or test is a non-retryable ``DbtBuildError`` in core's wording, with the
        failed nodes as details (the workflow reports them with the models it then skipped).
        """
        from core.dbt import DbtBuildError
        from core.pipeline import transform

        done: list[str] = []

        def log(message: str) -> None:
            activity.logger.info(message)
            done.append(message.strip())

        try:
            with heartbeating(lambda: done[-3:]), _only_selected_tests():
                result = transform(PIPELINE, select=[request.model, *request.tests], log=log)
        except DbtBuildError as exc:
            if not exc.failures:  # dbt did not get to run a node: not the data's fault, retried
                raise ApplicationError(str(exc), type="DbtInvocationError") from None
            raise ApplicationError(
                str(exc),
                *[{**dataclasses.asdict(n), "status": str(n.status)} for n in exc.failures],
                type="DbtBuildError",
                non_retryable=True,
            ) from None
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
        """The source API's clock and watermark (what the watcher workflow polls)."""
        from core.source_api import api_status

        status = api_status(self._api_url, self._api_token)
        return SourceStatus(as_of=status["as_of"], watermark=status.get("watermark"))

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
        return send_alert(payload)


_SELECTION_LOCK = threading.Lock()


@contextlib.contextmanager
def _only_selected_tests() -> Iterator[None]:
    """dbt selects exactly the model and the tests named (no tests of other models)."""
    import os

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
