"""``quartet bench``: full-year wall time and peak memory, an orchestrator beside the bare run.

Each measured run is the user's command (``python -m core run`` or
``python -m orchestrators.<name> run``) in its own environment, into a fresh warehouse (the
warehouse, the dlt state and the dbt target are deleted first; orchestrator homes are kept, as a
user's second run would find them). Runs alternate (bare, name, bare, name, ...) so that a noisy
neighbour on this shared machine hits both alike; medians are reported, and the ratio to bare.

Peak RSS is the largest sum of the resident memory of the whole process tree (orchestrators
start servers and workers), sampled every 50 ms from /proc. One source API, started here,
serves every run and is not counted.

``quartet bench reference`` measures the DuckDB-native reference instead: the raw CSVs read and
the same transformation SQL (dbt's compiled models) run directly in DuckDB in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core import settings


@dataclass
class Measurement:
    name: str
    seconds: float
    peak_rss_mb: float
    exit_code: int


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(root: int) -> int:
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kb(pid)
        stack += _children(pid)
    return total


def measure(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Measurement:
    peak = 0
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=settings.REPO_ROOT
        )
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_kb(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    return Measurement(name, time.perf_counter() - started, peak / 1024, code)


def command(name: str, as_of: str | None) -> list[str]:
    flags = ["--as-of", as_of] if as_of else []
    if name == "bare":
        return [sys.executable, "-m", "core", "run", *flags]
    return [str(settings.venv_python(name)), "-m", f"orchestrators.{name}", "run", *flags]


def reset(name: str) -> None:
    """A fresh warehouse for ``name``: warehouse file, dlt state and dbt target removed."""
    pipeline = settings.for_pipeline(name, export=False)
    for path in (
        pipeline.warehouse,
        pipeline.warehouse.with_name(pipeline.warehouse.name + ".wal"),
    ):
        path.unlink(missing_ok=True)
    for folder in (pipeline.pipelines_dir, pipeline.dbt_target_dir.parent):
        shutil.rmtree(folder, ignore_errors=True)


def run_reference() -> tuple[float, dict[str, int]]:
    """The DuckDB-native reference: raw tables from the CSVs, then the compiled dbt SQL."""
    import duckdb

    from core import dbt
    from core.source_api.data import records_sql

    path = settings.state_dir() / "bench" / "reference.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    manifest = dbt.load_manifest()
    # compile the models against the (empty) reference warehouse: plain, non-incremental SQL
    con = duckdb.connect(str(path))
    con.execute("create schema raw")
    con.close()
    target = settings.state_dir() / "bench" / "target"
    os.environ[settings.WAREHOUSE_ENV] = str(path)
    result = dbt._invoke(["compile", "--quiet", *dbt._base_args(target, target / "logs")])
    dbt.release_warehouse()
    if not result.success:
        raise RuntimeError(f"dbt compile failed: {result.exception}")
    compiled = json.loads((target / "manifest.json").read_text())["nodes"]
    models = [n for n in compiled.values() if n["resource_type"] == "model"]
    order = _topological([n["unique_id"] for n in models], manifest)
    path.unlink()

    started = time.perf_counter()
    con = duckdb.connect(str(path))
    con.execute("set TimeZone = 'UTC'")
    con.execute("create schema raw")
    for resource, sql in records_sql(1).items():
        extra = "time_hour::timestamptz as time_hour," if resource in ("flights", "weather") else ""
        exclude = "exclude (updated_at, time_hour)" if extra else "exclude (updated_at)"
        con.execute(
            f"create table raw.{resource} as select * {exclude}, updated_at::timestamp as updated_at, "
            f"{extra} '1' as _dlt_load_id, md5(id || updated_at) as _dlt_id from ({sql})"
        )
    for unique_id in order:
        node = compiled[unique_id]
        schema = node["schema"]
        kind = "view" if node["config"]["materialized"] == "view" else "table"
        con.execute(f"create schema if not exists {schema}")
        con.execute(f'create {kind} {schema}."{node["name"]}" as {node["compiled_code"]}')
    seconds = time.perf_counter() - started
    counts = {
        f"marts.{n}": con.execute(f"select count(*) from marts.{n}").fetchone()[0]
        for n in ("fct_flights", "carrier_month_performance", "route_stats")
    }
    con.close()
    return seconds, counts


def _topological(ids: list[str], manifest: dict) -> list[str]:
    remaining, done, order = set(ids), set(), []
    while remaining:
        ready = sorted(
            u
            for u in remaining
            if all(
                p in done or not p.startswith("model.")
                for p in manifest["nodes"][u]["depends_on"]["nodes"]
            )
        )
        if not ready:
            raise RuntimeError(f"cycle among {remaining}")
        order += ready
        done |= set(ready)
        remaining -= set(ready)
    return order


def bench_source_api(repeat: int, page_size: int | None = None) -> int:
    """Rows/s the API serves for the full flights year to one client, and the API's peak RSS."""
    import requests

    from core.ingestion import load_config

    page_size = page_size or load_config().page_size
    from core.source_api import start_process

    started = time.perf_counter()
    proc, url = start_process(["--port", "0", "--token", "bench"])
    try:
        print(
            f"source API ready in {time.perf_counter() - started:.1f}s (data loaded, JSON encoded)"
        )
        session = requests.Session()
        session.headers["Authorization"] = "Bearer bench"
        timings = []
        for _ in range(repeat):
            rows, cursor, started = 0, None, time.perf_counter()
            while True:
                params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
                body = session.get(f"{url}/v1/flights", params=params, timeout=60).json()
                rows += len(body["data"])
                cursor = body["next_cursor"]
                if cursor is None:
                    break
            timings.append(time.perf_counter() - started)
        with open(f"/proc/{proc.pid}/status") as handle:
            peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
        median = statistics.median(timings)
        print(
            f"flights, full year: {rows:,} records in pages of {page_size:,}: median {median:.2f}s "
            f"of {repeat} -> {rows / median:,.0f} records/s (client parses the JSON); "
            f"API peak RSS {peak / 1024:.0f} MB"
        )
    finally:
        proc.terminate()
        proc.wait()
    return 0


def main(name: str, *, repeat: int = 3, scale: int = 1, as_of: str | None = None) -> int:
    from core.source_api import SourceAPIConfig, running_source_api

    out_dir = settings.state_dir() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    if name == "source-api":
        return bench_source_api(repeat)
    if name == "reference":
        seconds, counts = run_reference()
        print(
            f"DuckDB-native reference (CSV -> raw -> compiled dbt SQL, one process): {seconds:.1f}s"
        )
        print(json.dumps(counts))
        return 0
    names = (
        ["bare"]
        if name == "bare"
        else ["bare", *(settings.ORCHESTRATORS if name == "all" else [name])]
    )
    env = {**os.environ, "QUARTET_SCALE": str(scale)}
    results: list[Measurement] = []
    with running_source_api(SourceAPIConfig(scale=scale)) as (url, token):
        env.update({settings.SOURCE_API_URL_ENV: url, settings.SOURCE_API_TOKEN_ENV: token})
        for i in range(repeat):
            for each in names:
                reset(each)
                m = measure(each, command(each, as_of), env, out_dir / f"{each}-{i}.log")
                results.append(m)
                status = (
                    "ok"
                    if m.exit_code == 0
                    else f"FAILED (exit {m.exit_code}, see {out_dir}/{each}-{i}.log)"
                )
                print(
                    f"run {i + 1}/{repeat} {each:9s} {m.seconds:7.1f}s  peak RSS {m.peak_rss_mb:7.0f} MB  {status}",
                    flush=True,
                )
    summary = {}
    for each in names:
        mine = [m for m in results if m.name == each and m.exit_code == 0]
        if mine:
            summary[each] = {
                "median_seconds": round(statistics.median(m.seconds for m in mine), 1),
                "median_peak_rss_mb": round(statistics.median(m.peak_rss_mb for m in mine)),
                "runs": len(mine),
            }
    base = summary.get("bare")
    print(f"\nfull year (scale {scale}), medians of {repeat} alternating runs:")
    print(f"{'pipeline':10s} {'wall s':>8s} {'x bare':>7s} {'peak RSS MB':>12s} {'x bare':>7s}")
    for each, s in summary.items():
        ratio_t = s["median_seconds"] / base["median_seconds"] if base else float("nan")
        ratio_m = s["median_peak_rss_mb"] / base["median_peak_rss_mb"] if base else float("nan")
        print(
            f"{each:10s} {s['median_seconds']:8.1f} {ratio_t:7.2f} {s['median_peak_rss_mb']:12d} {ratio_m:7.2f}"
        )
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"bench-{name}-{stamp}.json").write_text(
        json.dumps({"summary": summary, "runs": [asdict(m) for m in results]}, indent=2)
    )
    return 0 if all(m.exit_code == 0 for m in results) else 1
