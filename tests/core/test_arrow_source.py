"""The Arrow path of the dlt source (NDJSON pages parsed by pyarrow) loads exactly what dlt's
declarative rest_api source loads from the JSON pages, and breaks the same way on bad records."""

from __future__ import annotations

import pytest

from core import settings
from examples.nycflights.source import (
    RECORD_FORMAT_ENV,
    MalformedRecordError,
    arrow_schema,
    parse_page,
)
from lab.fingerprint import diff, fingerprint
from tests.conftest import bare_run

FIRST_DAYS = "2013-01-03"


def test_a_page_parses_into_the_frozen_column_types():
    page = (
        b'{"id":"AA","updated_at":"2013-01-01T00:00:00","carrier":"AA","name":"American"}\n'
        b'{"id":"UA","updated_at":"2013-01-01T00:00:00","carrier":"UA","name":null}\n'
    )
    table = parse_page("airlines", page)
    assert table.num_rows == 2 and table.schema == arrow_schema("airlines")
    assert parse_page("airlines", b"").num_rows == 0


@pytest.mark.parametrize(
    ("page", "needle"),
    [
        (b'{"id":"1","updated_at":"2013-01-01T00:00:00","arr_delay":"late"}\n', "arr_delay"),
        (b'{"updated_at":"2013-01-01T00:00:00","arr_delay":3}\n', "no primary key field 'id'"),
        (b'{"id":"","updated_at":"2013-01-01T00:00:00"}\n', "no primary key field 'id'"),
        (b'{"id":"1","updated_at":"2013-01-01T00:00:00","colour":"red"}\n', "colour"),
    ],
)
def test_a_record_that_breaks_the_contract_is_named(page, needle):
    with pytest.raises(MalformedRecordError, match="resource 'flights'") as err:
        parse_page("flights", page)
    assert needle in str(err.value)


def test_arrow_and_rest_api_paths_build_the_same_warehouse(source_api, monkeypatch):
    monkeypatch.setenv(RECORD_FORMAT_ENV, "arrow")
    arrow = fingerprint(bare_run("arrow_path", as_of=FIRST_DAYS))
    monkeypatch.setenv(RECORD_FORMAT_ENV, "json")
    json_path = fingerprint(bare_run("json_path", as_of=FIRST_DAYS))
    assert arrow.tables["raw.flights"].rows > 2_000
    assert diff(json_path, arrow) == []
    assert settings.for_pipeline("arrow_path").warehouse.exists()
