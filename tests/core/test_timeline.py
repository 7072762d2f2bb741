"""``quartet timeline``: the split of a run's wall time, its chart, and bare's own trace."""

from __future__ import annotations

import pytest

from core import lineage
from lab import timeline
from tests.helpers import JANUARY

T0 = 1_700_000_000.0  # any epoch: the split only uses differences


def _run(name: str, wall: tuple[float, float], units: list[tuple[str, str, float, float]]) -> dict:
    return {
        "name": name,
        "command": f"quartet run {name} --as-of {JANUARY}",
        "as_of": JANUARY,
        "load": 1.0,
        "wall": {"start": T0 + wall[0], "end": T0 + wall[1]},
        "run": {"start": T0 + wall[0], "end": T0 + wall[1], "source": "test"},
        "units": [
            {"unit": u, "kind": k, "start": T0 + start, "end": T0 + end}
            for u, k, start, end in units
        ],
    }


BARE = _run(
    "bare",
    (0, 20),
    [("all resources", "ingest", 2, 10), ("stg_flights", "dbt", 11, 14), ("t1", "test", 14, 15)],
)
ORCHESTRATED = _run(
    "dagster",
    (0, 40),
    [
        ("flights", "ingest", 8, 14),  # start-up 8 s
        ("weather", "ingest", 12, 16),  # overlaps flights: busy ingest 8..16 = 8 s
        ("stg_flights", "dbt", 20, 25),  # gap 16..20
        ("t1", "test", 25, 27),
    ],
)


def test_split_of_a_known_timeline():
    row = timeline.split(ORCHESTRATED, BARE)
    assert row["wall"] == pytest.approx(40)
    assert row["work"] == pytest.approx(8 + 4)  # bare: ingest 8 s, model 3 s + test 1 s
    assert row["startup"] == pytest.approx(8)
    assert row["gaps"] == pytest.approx(4)  # 16..20; the overlap of the two ingests is no gap
    assert row["overhead"] == {"ingest": pytest.approx(0), "dbt": pytest.approx(7 - 4)}
    assert row["winddown"] == pytest.approx(13)
    assert row["orchestration"] == pytest.approx(40 - 12)
    # every second of the wall is accounted for exactly once
    parts = row["work"] + row["startup"] + row["gaps"] + sum(row["overhead"].values())
    assert parts + row["winddown"] - row["overlap"] == pytest.approx(row["wall"])


def test_bare_against_itself_has_no_overhead():
    row = timeline.split(BARE, BARE)
    assert row["overhead"] == {"ingest": pytest.approx(0), "dbt": pytest.approx(0)}
    assert (row["startup"], row["gaps"], row["winddown"]) == pytest.approx((2, 1, 5))


def test_bare_units_are_read_from_its_stamped_lines():
    lines = [
        [T0 + 1, "[bare] ingest as of 2013-01-31: flights +27,004 (27,004 fetched) in 4.5s"],
        [
            T0 + 6,
            "[bare] dbt     stg_flights                     0.4s  27,004 rows, 7 tests passed",
        ],
        [T0 + 7, "[bare] dbt     fct_flights                    12.5s  4 tests passed"],
        [T0 + 8, "[bare] dbt build: 2 models ok, 11 tests passed in 2.0s"],
    ]
    assert timeline.bare_units(lines) == [
        {"unit": "all resources", "kind": "ingest", "start": T0 + 1 - 4.5, "end": T0 + 1},
        {"unit": "stg_flights", "kind": "dbt", "start": T0 + 6 - 0.4, "end": T0 + 6},
        {"unit": "fct_flights", "kind": "dbt", "start": T0 + 7 - 12.5, "end": T0 + 7},
    ]


def test_charts_table_and_doc_section_are_written(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Timelines\n\nWhat the figures mean.\n\n## Later\n")
    runs = {"bare": BARE, "dagster": ORCHESTRATED}
    written = timeline.render(runs, tmp_path / "img", doc)
    assert [p.name for p in written] == ["timeline-bare.png", "timeline-dagster.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    text = doc.read_text()
    assert (
        "| dagster | 40.0 s | +20.0 s | 12.0 s | 28.0 s | 8.0 s | 4.0 s | +0.0 s | +3.0 s | 13.0 s |"
        in text
    )
    assert "What the figures mean." in text and text.endswith("## Later\n")
    timeline.render(runs, tmp_path / "img", doc)  # a second render replaces, never duplicates
    assert doc.read_text() == text


def test_bare_month_timeline_has_every_unit_within_the_run(tmp_path):
    run = timeline.timeline("bare", tmp_path, JANUARY)
    graph = lineage.canonical()
    models = {n for n in graph.order() if not n.startswith("raw.")}
    seen = {u["unit"]: u for u in run["units"]}
    assert set(seen) == {"all resources"} | models  # each model's bar holds its tests
    for unit in run["units"]:
        assert run["wall"]["start"] < unit["start"] < unit["end"] <= run["wall"]["end"], unit
    # dbt builds after ingestion, in one process: its first node starts after the load ended
    first_dbt = min(u["start"] for u in run["units"] if u["kind"] != "ingest")
    assert first_dbt >= seen["all resources"]["end"] - 0.1
