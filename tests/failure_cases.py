"""One table of failures and whether a retry may help: core's answer and every adapter's
mapping are held against it (tests/core/test_failures.py, each orchestrator's test_definitions).

Each case builds the exception as the pipeline raises it (chained the way ``ingest`` chains an
HTTP error into an IngestionError), so a rule that reads only the outer type fails here.
"""

from __future__ import annotations

from collections.abc import Callable

import requests

from core.failures import (
    ConfigError,
    DbtBuildError,
    IngestionError,
    MalformedRecordError,
    WarehouseBusyError,
    WarehouseConnectionError,
)


def _http(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Error", response=response)


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as raised:
        return raised


#: (case id, a factory of the exception, may a retry help?)
CASES: list[tuple[str, Callable[[], BaseException], bool]] = [
    ("token-refused-401", lambda: _chained(IngestionError("ingest failed"), _http(401)), False),
    ("forbidden-403", lambda: _chained(IngestionError("ingest failed"), _http(403)), False),
    ("bad-request-400", lambda: _chained(IngestionError("ingest failed"), _http(400)), False),
    ("server-error-503", lambda: _chained(IngestionError("ingest failed"), _http(503)), True),
    ("rate-limited-429", lambda: _chained(IngestionError("ingest failed"), _http(429)), True),
    (
        "connection-refused",
        lambda: _chained(IngestionError("ingest failed"), ConnectionRefusedError(111, "refused")),
        True,
    ),
    ("timeout", lambda: _chained(IngestionError("ingest failed"), TimeoutError("timed out")), True),
    ("connection-dropped", lambda: requests.ConnectionError("connection reset"), True),
    ("warehouse-busy", lambda: WarehouseBusyError("held by pid 1"), True),
    (
        "malformed-record",
        lambda: _chained(IngestionError("ingest failed"), MalformedRecordError("bad record")),
        False,
    ),
    ("bad-config", lambda: ConfigError("page_size must be int"), False),
    ("dbt-test-failed", lambda: DbtBuildError("dbt build failed", []), False),
    ("not-a-warehouse", lambda: WarehouseConnectionError("not a DuckDB database"), False),
    ("module-missing", lambda: ImportError("no module named x"), False),
    ("unforeseen", lambda: KeyError("surprise"), True),
]
