"""The resources' contract: what each raw table's columns and key are, frozen.

The dlt source loads these columns with these types and nothing else (a record that does not fit
fails its unit by name); the config may enable only these resources. Pure data: importing it
costs nothing, so the config loader checks against it without importing dlt.
"""

from __future__ import annotations

from typing import Any

#: a revision of a record: its id and when it was published (the raw layer's merge key, ADR 0004)
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


#: every resource the source knows, in the order the docs show them
RESOURCES = tuple(COLUMNS)
