"""The pipeline every orchestrator runs: ingest (dlt) then transform (dbt build).

Orchestrators call :func:`ingest` once per resource (their ingestion unit) and :func:`transform`
once or per dbt node; the bare run (:func:`run`) calls both in one process. Both take the
warehouse's writer lock, so two writers never meet on one DuckDB file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dlt
from dlt.pipeline.exceptions import PipelineStepFailed

from core import dbt, settings, warehouse
from core.ingestion import IngestionConfig, RunWindow, load_config, window
from core.source import flights_source

Log = Callable[[str], None]


class IngestionError(RuntimeError):
    """Loading from the source API failed; nothing of the failed step was loaded."""


@dataclass
class IngestResult:
    pipeline: str
    window: RunWindow
    rows_fetched: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [
            f"{table} {self.new_rows.get(table, 0):+,} ({self.rows_fetched.get(table, 0):,} fetched)"
            for table in sorted(set(self.rows_fetched) | set(self.new_rows))
        ]
        return ", ".join(parts) or "nothing new"


def _print(message: str) -> None:
    print(message, flush=True)


def dlt_pipeline(pipeline: settings.PipelineSettings) -> dlt.Pipeline:
    """The dlt pipeline of a named run: its own name and working dir, the shared warehouse path."""
    return dlt.pipeline(
        pipeline_name=pipeline.pipeline_name,
        pipelines_dir=str(pipeline.pipelines_dir),
        destination=dlt.destinations.duckdb(str(pipeline.warehouse)),
        dataset_name=settings.RAW_SCHEMA,
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or (
        seen.__context__ is not None and not seen.__suppress_context__
    ):
        seen = seen.__cause__ or seen.__context__
    return seen


def ingest(
    name: str,
    run_window: RunWindow,
    *,
    base_url: str,
    token: str,
    config: IngestionConfig | None = None,
    log: Log = _print,
) -> IngestResult:
    """Load ``run_window`` from the API into ``warehouse/<name>.duckdb`` (raw schema)."""
    config = config or load_config()
    pipeline = settings.for_pipeline(name)
    os.environ.update(config.runtime_env(run_window.resources))
    result = IngestResult(pipeline=name, window=run_window)
    started = time.perf_counter()
    with warehouse.writer_lock(pipeline.warehouse, purpose=f"{name} ingest"):
        before = warehouse.table_counts(pipeline.warehouse, (settings.RAW_SCHEMA,))
        source = flights_source(config, run_window, base_url=base_url, token=token)
        p = dlt_pipeline(pipeline)
        try:
            p.run(source, loader_file_format=config.loader_file_format)
        except PipelineStepFailed as exc:
            cause = _root_cause(exc)
            hint = ""
            if "401" in str(cause):
                hint = f" (the API rejected the token: check {settings.SOURCE_API_TOKEN_ENV})"
            elif isinstance(cause, ConnectionError | OSError) and "refused" in str(cause).lower():
                hint = f" (the source API at {base_url} is unreachable: check {settings.SOURCE_API_URL_ENV})"
            raise IngestionError(
                f"ingesting {', '.join(run_window.resources)} from {base_url} into "
                f"{pipeline.warehouse} failed at the {exc.step} step{hint}: "
                f"{type(cause).__name__}: {cause}. Nothing of this step was loaded."
            ) from exc
        after = warehouse.table_counts(pipeline.warehouse, (settings.RAW_SCHEMA,))
    trace = p.last_trace
    normalized = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    for resource in run_window.resources:
        key = f"{settings.RAW_SCHEMA}.{resource}"
        result.rows_fetched[resource] = int(normalized.get(resource, 0))
        result.new_rows[resource] = after.get(key, 0) - before.get(key, 0)
    result.seconds = time.perf_counter() - started
    log(f"[{name}] ingest {_describe(run_window)}: {result.summary()} in {result.seconds:.1f}s")
    return result


def transform(
    name: str,
    *,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    log: Log = _print,
) -> dbt.BuildResult:
    """``dbt build`` (models and tests) on ``warehouse/<name>.duckdb``; raises on any failure."""
    pipeline = settings.for_pipeline(name)

    def on_node(node: dbt.NodeResult) -> None:
        rows = (
            f", {node.rows:,} rows"
            if node.rows is not None and node.resource_type == "model"
            else ""
        )
        log(
            f"[{name}]   {node.resource_type} {node.name}: {node.status}{rows} ({node.seconds:.2f}s)"
        )

    with warehouse.writer_lock(pipeline.warehouse, purpose=f"{name} dbt build"):
        result = dbt.build(pipeline, select=select, exclude=exclude, on_node=on_node)
    log(
        f"[{name}] dbt build: {result.count('success')} models ok, {result.count('pass')} tests "
        f"passed in {result.seconds:.1f}s"
    )
    return result


def _describe(run_window: RunWindow) -> str:
    parts = []
    if run_window.partition:
        parts.append(f"partition {run_window.partition}")
    parts.append(f"as of {run_window.as_of}" if run_window.as_of else "as of latest")
    return ", ".join(parts)


def run(
    name: str = "bare",
    *,
    as_of: str | None = None,
    partitions: Sequence[str] | None = None,
    resources: tuple[str, ...] | None = None,
    log: Log = _print,
) -> list[IngestResult]:
    """The plain end-to-end run: start the API if needed, ingest, build dbt (tests included)."""
    from core.source_api import SourceAPIConfig, running_source_api

    config = load_config()
    windows = [
        window(config, as_of=as_of, partition=p, resources=resources) for p in partitions or [None]
    ]
    api_config = SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )
    results = []
    started = time.perf_counter()
    with running_source_api(api_config) as (url, token):
        for run_window in windows:
            results.append(
                ingest(name, run_window, base_url=url, token=token, config=config, log=log)
            )
            transform(name, log=log)
    log(
        f"[{name}] done in {time.perf_counter() - started:.1f}s -> {settings.for_pipeline(name).warehouse}"
    )
    return results
