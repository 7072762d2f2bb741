"""Three ways to put dlt under Dagster, side by side (ADR 0006 compares them).

Not part of the pipeline's code location: a study. Each loads the raw layer of its own warehouse
(``warehouse/dagster_<pattern>.duckdb``, core's dlt pipeline for that name) from the same API,
with the adapter's own resources; tests/orchestrators/dagster/test_integration_patterns.py proves
the raw tables identical to bare's. Pattern 2 is dagster-dlt's stock pattern (``dlt.run(context=
...)`` inside ``@dlt_assets``); the main path (assets.py) declares its assets that way but loads
through core's ``ingest``.

1. ``multi_asset_rest_api``: a ``@multi_asset`` that runs core's declarative rest_api source
   through an explicit ``dlt.pipeline``: Dagster sees assets, dlt stays a black box.
2. ``dlt_assets_rest_api``: dagster-dlt's ``@dlt_assets`` over the same source: asset specs,
   subsetting and load metadata (rows, columns, dlt jobs) come from the integration.
3. ``multi_asset_handwritten``: hand-written ``@dlt.resource`` generators doing their own HTTP
   (pagination, retries with Retry-After, errors), wrapped in a ``@multi_asset``.

Materialize one: ``dg.materialize(PATTERNS["multi_asset_rest_api"], resources=pattern_resources())``.
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import dlt
import requests
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from core import settings
from core.ingestion import window
from core.pipeline import dlt_pipeline
from examples.nycflights.source import COLUMNS, PRIMARY_KEY, flights_api_source
from orchestrators.dagster.project import CONFIG
from orchestrators.dagster.resources import ApiClock, SourceAPI, resources

RESOURCES = CONFIG.resources


def pattern_warehouse(pattern: str) -> settings.PipelineSettings:
    return settings.for_pipeline(f"dagster_{pattern}")


def _pipeline(pattern: str) -> dlt.Pipeline:
    return dlt_pipeline(pattern_warehouse(pattern))


def _specs(pattern: str) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec([pattern, settings.RAW_SCHEMA, name], group_name=pattern, kinds={"dlt"})
        for name in RESOURCES
    ]


# -- 1. @multi_asset + declarative rest_api source + explicit dlt pipeline -----------------------
@dg.multi_asset(specs=_specs("multi_asset_rest_api"), name="multi_asset_rest_api")
def multi_asset_rest_api(
    context: dg.AssetExecutionContext, source_api: SourceAPI, api_clock: ApiClock
) -> Iterator[dg.MaterializeResult]:
    source = flights_api_source(
        CONFIG, window(CONFIG, as_of=api_clock.as_of), source_api.url, source_api.token
    )
    info = _pipeline("multi_asset_rest_api").run(
        source, loader_file_format=CONFIG.loader_file_format
    )
    context.log.info(str(info))
    for spec in context.assets_def.specs:
        yield dg.MaterializeResult(asset_key=spec.key)


# -- 2. dagster-dlt's @dlt_assets over the same source -------------------------------------------
class _PatternKeys(DagsterDltTranslator):
    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        pattern = "dlt_assets_rest_api"
        return (
            super()
            .get_asset_spec(data)
            .replace_attributes(
                key=[pattern, settings.RAW_SCHEMA, data.resource.name], deps=[], group_name=pattern
            )
        )


@dlt_assets(
    dlt_source=flights_api_source(
        CONFIG, window(CONFIG), "http://source-api.invalid", "at-run-time"
    ),
    dlt_pipeline=_pipeline("dlt_assets_rest_api"),
    name="dlt_assets_rest_api",
    dagster_dlt_translator=_PatternKeys(),
)
def dlt_assets_rest_api(
    context: dg.AssetExecutionContext,
    dlt: DagsterDltResource,
    source_api: SourceAPI,
    api_clock: ApiClock,
) -> Iterator[Any]:
    source = flights_api_source(
        CONFIG, window(CONFIG, as_of=api_clock.as_of), source_api.url, source_api.token
    )
    yield from dlt.run(context=context, dlt_source=source)


# -- 3. hand-written dlt resources doing their own HTTP, in a @multi_asset -----------------------
class SourceAPIError(RuntimeError):
    """The API refused a request (4xx) or kept failing after every retry."""


def _get(session: requests.Session, url: str, params: dict) -> dict:
    """GET with bounded retries: 429 (honouring Retry-After), 5xx and dropped connections."""
    attempts = CONFIG.max_attempts
    for attempt in range(1, attempts + 1):
        try:
            response = session.get(url, params=params, timeout=CONFIG.request_timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            problem = f"{type(exc).__name__}"
        else:
            if response.status_code == 200:
                return response.json()
            if response.status_code != 429 and response.status_code < 500:
                raise SourceAPIError(f"GET {url} answered {response.status_code}: {response.text}")
            problem = f"HTTP {response.status_code}"
            retry_after = response.headers.get("Retry-After")
            if retry_after and attempt < attempts:
                time.sleep(min(float(retry_after), CONFIG.max_retry_delay))
                continue
        if attempt < attempts:
            time.sleep(min(CONFIG.backoff_factor * 2**attempt, CONFIG.max_retry_delay))
    raise SourceAPIError(f"GET {url} failed {attempts} times (last: {problem})")


def handwritten_source(base_url: str, token: str, as_of: str | None):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def records(name: str) -> Iterator[list[dict]]:
        params: dict[str, Any] = {
            "limit": CONFIG.page_size,
            "updated_since": f"{CONFIG.start}T00:00:00",
        }
        if as_of:
            params["as_of"] = as_of
        while True:  # cursor pagination: follow next_cursor until it is null
            page = _get(session, f"{base_url}/v1/{name}", params)
            yield page["data"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    @dlt.source(name="flights_api", max_table_nesting=0)
    def source():
        for name in RESOURCES:
            yield dlt.resource(
                records(name),
                name=name,
                primary_key=PRIMARY_KEY,
                write_disposition="merge",
                columns=COLUMNS[name],
            )

    return source()


@dg.multi_asset(specs=_specs("multi_asset_handwritten"), name="multi_asset_handwritten")
def multi_asset_handwritten(
    context: dg.AssetExecutionContext, source_api: SourceAPI, api_clock: ApiClock
) -> Iterator[dg.MaterializeResult]:
    source = handwritten_source(source_api.url, source_api.token, api_clock.as_of)
    info = _pipeline("multi_asset_handwritten").run(
        source, loader_file_format=CONFIG.loader_file_format
    )
    context.log.info(str(info))
    for spec in context.assets_def.specs:
        yield dg.MaterializeResult(asset_key=spec.key)


PATTERNS = {
    "multi_asset_rest_api": multi_asset_rest_api,
    "dlt_assets_rest_api": dlt_assets_rest_api,
    "multi_asset_handwritten": multi_asset_handwritten,
}


def pattern_resources() -> dict[str, Any]:
    """The pipeline's own source API and clock resources, plus dagster-dlt's for pattern 2."""
    shared = resources()
    return {
        "source_api": shared["source_api"],
        "api_clock": shared["api_clock"],
        "dlt": DagsterDltResource(),
    }


defs = dg.Definitions(assets=list(PATTERNS.values()), resources=pattern_resources())
