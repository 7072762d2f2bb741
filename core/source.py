"""The dlt source: dlt's declarative rest_api source over the flights API.

One resource per API endpoint, each a raw table in the ``raw`` dataset. The raw layer is a
record of source *revisions*: every resource merges on ``(id, updated_at)``, so loading the
same window twice, or windows in any order, yields the same rows (see ADR 0004).

* Time-sliced resources (flights, weather) use an incremental cursor on ``updated_at``, mapped to
  the API's ``updated_since``/``updated_until`` parameters. A partition run sets ``end_value``,
  which makes dlt leave the incremental state alone (a backfill does not move the cursor).
* Reference resources (planes, airports, airlines) are not sliced by month: every run asks for
  what changed since the last one (their cursor), whatever the partition.
* Column types are declared and frozen: a record whose value does not fit its column fails the
  run in extraction, before anything is loaded, with a message naming the resource and column.
"""

from __future__ import annotations

from typing import Any

from dlt.extract.source import DltSource
from dlt.sources.rest_api import rest_api_source

from core.ingestion import IngestionConfig, RunWindow

PRIMARY_KEY = ["id", "updated_at"]

_TS = {"data_type": "timestamp", "timezone": False}
_KEY = {"data_type": "text", "nullable": False}

COLUMNS: dict[str, dict[str, dict[str, Any]]] = {
    "flights": {
        "id": _KEY,
        "updated_at": {**_TS, "nullable": False},
        "revision": {"data_type": "bigint"},
        **{
            name: {"data_type": "bigint"}
            for name in (
                "year",
                "month",
                "day",
                "dep_time",
                "sched_dep_time",
                "dep_delay",
                "arr_time",
                "sched_arr_time",
                "arr_delay",
                "flight",
                "air_time",
                "distance",
                "hour",
                "minute",
            )
        },
        **{name: {"data_type": "text"} for name in ("carrier", "tailnum", "origin", "dest")},
        "time_hour": {"data_type": "timestamp"},
    },
    "weather": {
        "id": _KEY,
        "updated_at": {**_TS, "nullable": False},
        "origin": {"data_type": "text"},
        **{name: {"data_type": "bigint"} for name in ("year", "month", "day", "hour", "wind_dir")},
        **{
            name: {"data_type": "double"}
            for name in (
                "temp",
                "dewp",
                "humid",
                "wind_speed",
                "wind_gust",
                "precip",
                "pressure",
                "visib",
            )
        },
        "time_hour": {"data_type": "timestamp"},
    },
    "planes": {
        "id": _KEY,
        "updated_at": {**_TS, "nullable": False},
        **{
            name: {"data_type": "text"}
            for name in ("tailnum", "type", "manufacturer", "model", "engine")
        },
        **{name: {"data_type": "bigint"} for name in ("year", "engines", "seats", "speed")},
    },
    "airports": {
        "id": _KEY,
        "updated_at": {**_TS, "nullable": False},
        **{name: {"data_type": "text"} for name in ("faa", "name", "dst", "tzone")},
        **{name: {"data_type": "double"} for name in ("lat", "lon")},
        **{name: {"data_type": "bigint"} for name in ("alt", "tz")},
    },
    "airlines": {
        "id": _KEY,
        "updated_at": {**_TS, "nullable": False},
        "carrier": {"data_type": "text"},
        "name": {"data_type": "text"},
    },
}


class MalformedRecordError(ValueError):
    """A record from the source API that breaks the resource's contract."""


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


def _resource_config(name: str, config: IngestionConfig, window: RunWindow) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": config.page_size}
    if window.as_of:
        params["as_of"] = window.as_of
    sliced = name not in config.reference_resources
    incremental: dict[str, Any] = {
        "cursor_path": "updated_at",
        "start_param": "updated_since",
        "initial_value": (sliced and window.since) or f"{config.start}T00:00:00",
    }
    if sliced and window.until:
        incremental["end_param"] = "updated_until"
        incremental["end_value"] = window.until
    return {
        "name": name,
        "primary_key": PRIMARY_KEY,
        "write_disposition": "merge",
        "columns": COLUMNS[name],
        "endpoint": {"path": name, "params": params, "incremental": incremental},
        "processing_steps": [{"map": _require_keys(name)}],
    }


def flights_source(
    config: IngestionConfig, window: RunWindow, base_url: str, token: str
) -> DltSource:
    """The nycflights13 source API as a dlt source, one resource per enabled endpoint."""
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
