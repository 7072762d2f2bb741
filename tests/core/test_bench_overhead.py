"""`quartet bench all`: ratios are taken to the bare runs of the same block, the docs section and
the chart are generated from the JSON (the runs themselves are the benchmark, not a test)."""

from __future__ import annotations

import copy

from lab import bench_overhead


def _result(dev: float, dev_bare: float, deployed: float | None, deployed_bare: float) -> dict:
    return {
        "dev": {"median_seconds": dev, "median_cpu_seconds": dev / 2, "runs": 3},
        "dev_bare": {"median_seconds": dev_bare, "median_cpu_seconds": dev_bare / 2, "runs": 3},
        "dev_exit_codes": [0, 0, 0],
        "deployed": {
            "up_seconds": 12.5,
            "up_exit_code": 0,
            "idle_rss_mb": {"server": 200, "worker": 150},
            "median_seconds": deployed,
            "median_cpu_seconds": deployed and deployed / 2,
            "median_first_unit_latency_seconds": 2.0,
            "runs": [{"exit_code": 0 if deployed else 1}],
        },
        "deployed_bare": {"median_seconds": deployed_bare, "median_cpu_seconds": 10.0, "runs": 3},
    }


PAYLOAD = {
    "as_of": None,
    "repeat": 3,
    "started": 1_800_000_000.0,
    "ended": 1_800_000_600.0,
    "load": 1.2,
    "goals": {"dev": bench_overhead.DEV_GOAL, "deployed": bench_overhead.DEPLOYED_GOAL},
    "orchestrators": {
        # each ratio against its own block's bare: 40/25 and 26/20, both within the goals
        "temporal": _result(40.0, 25.0, 26.0, 20.0),
        # 90/30 = 3x (over the dev goal); the deployed runs failed
        "airflow": _result(90.0, 30.0, None, 20.0),
    },
}


def test_ratios_are_to_the_bare_runs_of_the_same_block():
    dev, deployed = bench_overhead.ratios(PAYLOAD["orchestrators"]["temporal"])
    assert (dev, deployed) == (40.0 / 25.0, 26.0 / 20.0)
    assert bench_overhead.ratios(PAYLOAD["orchestrators"]["airflow"]) == (3.0, None)


def test_table_marks_the_goals_met_and_the_failed_runs():
    rows = bench_overhead.table(PAYLOAD).splitlines()
    temporal = next(r for r in rows if r.startswith("| temporal "))
    airflow = next(r for r in rows if r.startswith("| airflow "))
    assert "| **1.60x** ✓ |" in temporal and "| **1.30x** ✓ |" in temporal
    assert "| 350 MB |" in temporal and "| 12.5 s |" in temporal
    assert "| **3.00x** |" in airflow and "| failed |" in airflow


def test_doc_section_and_chart_are_generated_and_replaced(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n{bench_overhead.SECTION}\n\nHow to read it.\n\n## Later\n")
    bench_overhead.write_doc(PAYLOAD, doc)
    text = doc.read_text()
    assert "`quartet bench all --repeat 3`" in text and "10 minutes, full year" in text
    assert bench_overhead.table(PAYLOAD) in text
    assert "How to read it." in text and text.endswith("## Later\n")
    newer = copy.deepcopy(PAYLOAD)
    newer["orchestrators"]["temporal"]["dev"]["median_seconds"] = 60.0
    bench_overhead.write_doc(newer, doc)  # replaced between its markers, never appended
    assert doc.read_text().count(bench_overhead.SECTION) == 1
    assert "| **2.40x** |" in doc.read_text() and "**1.60x**" not in doc.read_text()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = bench_overhead.chart(plt, PAYLOAD, tmp_path / "overhead.png")
    assert path.read_bytes().startswith(b"\x89PNG")
