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

``quartet bench scaling`` runs ``QUARTET_SCALE=N quartet run bare`` at scales 1, 3 and 10 (the
run starts its own source API, counted in the tree's RSS; each scale's published store is built
before the timed run, and its build time reported).

Besides wall time, every run reports the CPU seconds of its process tree (``wait4``): on this
shared machine CPU seconds are far less noisy than wall seconds. Levers are measured as
variants beside bare: ``QUARTET_BENCH_VARIANTS='{"json": {"QUARTET_RECORD_FORMAT": "json"}}'``
adds a run with that environment after each bare run (``"_root": DIR`` runs the bare pipeline of
another checkout, e.g. the commit before a change). Every bench writes its JSON to
``.quartet/bench/`` and re-renders the charts ``docs/img/bench-*.png`` from the latest JSONs.
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
    cpu_seconds: float = 0.0
    scale: int = 1


def children(pid: int) -> list[int]:
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


def tree(root: int) -> list[int]:
    """``root`` and every process below it, as /proc shows them now."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.append(pid)
            stack += children(pid)
    return found


def tree_rss_kb(root: int) -> int:
    return sum(_rss_kb(pid) for pid in tree(root))


def measure(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    interval: float = 0.05,
    scale: int = 1,
) -> Measurement:
    """Run ``argv``; wall seconds, CPU seconds of the whole tree, peak RSS of the tree."""
    peak = 0
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or settings.REPO_ROOT
        )
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_kb(proc.pid))
                time.sleep(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4: the child's rusage includes every descendant it waited for (API, workers)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    cpu = usage.ru_utime + usage.ru_stime
    return Measurement(name, time.perf_counter() - started, peak / 1024, code, cpu, scale)


def command(name: str, as_of: str | None) -> list[str]:
    flags = ["--as-of", as_of] if as_of else []
    if name == "bare":
        return [sys.executable, "-m", "core", "run", *flags]
    return [str(settings.venv_python(name)), "-m", f"orchestrators.{name}", "run", *flags]


def reset(name: str) -> None:
    """A fresh warehouse for ``name``: warehouse file, dlt state and dbt target removed.

    dbt's parse cache (``partial_parse.msgpack``) is kept, as a user's second run finds it: it
    holds no warehouse state, only the parsed project for this pipeline's profile. Without it
    each measured run of an orchestrator paid a full dbt parse (3-6 s) that only a first run pays:
    the prepared parse it is otherwise seeded from was made for another warehouse path, and dbt
    rejects a parse cache whose profile differs ("Unable to do partial parsing because profile
    has changed"). Bare was not affected (its run prepares that parse with its own path)."""
    pipeline = settings.for_pipeline(name)
    for path in (
        pipeline.warehouse,
        pipeline.warehouse.with_name(pipeline.warehouse.name + ".wal"),
    ):
        path.unlink(missing_ok=True)
    parse_cache = pipeline.dbt_target_dir / "partial_parse.msgpack"
    kept = parse_cache.read_bytes() if parse_cache.exists() else None
    for folder in (pipeline.pipelines_dir, pipeline.dbt_target_dir.parent):
        shutil.rmtree(folder, ignore_errors=True)
    if kept is not None:
        parse_cache.parent.mkdir(parents=True)
        parse_cache.write_bytes(kept)


#: CPU seconds of the last reference run's timed part (DuckDB's threads included)
_reference_cpu_seconds = 0.0


def run_reference() -> tuple[float, dict[str, int]]:
    """The DuckDB-native reference: raw tables from the CSVs, then the compiled dbt SQL."""
    import duckdb

    from core import dbt, lineage
    from source_api.data import records_sql

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
    by_name = {n["name"]: n["unique_id"] for n in models}
    order = [by_name[n] for n in lineage.canonical(manifest).order() if n in by_name]
    path.unlink()

    started, started_cpu = time.perf_counter(), time.process_time()
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
    global _reference_cpu_seconds
    _reference_cpu_seconds = time.process_time() - started_cpu
    counts = {
        f"marts.{n}": con.execute(f"select count(*) from marts.{n}").fetchone()[0]
        for n in ("fct_flights", "carrier_month_performance", "route_stats")
    }
    con.close()
    return seconds, counts


def bench_source_api(repeat: int, page_size: int | None = None) -> int:
    """Records/s the API serves for the full flights year to one client, per format and page
    size (JSON parsed by ``requests``; NDJSON parsed into Arrow by the pipeline's own
    ``parse_page``), and the API's start-up and peak RSS."""
    import requests

    from core.ingestion import load_config
    from core.source_service import start_process
    from examples.nycflights.source import parse_page
    from source_api.data import published_store, store_path

    page_size = page_size or load_config().page_size
    fresh = not store_path(1).exists()
    started = time.perf_counter()
    published_store(1)
    build = time.perf_counter() - started
    started = time.perf_counter()
    proc, url = start_process(["--port", "0"], "bench")
    results: dict = {
        "store_build_seconds": round(build, 1) if fresh else None,
        "ready_seconds": round(time.perf_counter() - started, 2),
        "formats": {},
    }
    try:
        print(
            f"published store {'built' if fresh else 'found'} in {build:.1f}s; source API ready "
            f"in {results['ready_seconds']:.1f}s"
        )
        session = requests.Session()
        session.headers["Authorization"] = "Bearer bench"
        cases = [("json", page_size), ("ndjson", page_size), ("ndjson", 50_000)]
        timings: dict[str, list[float]] = {f"{f} {n}": [] for f, n in cases}
        for _ in range(repeat):  # alternating, like every bench here
            for fmt, size in cases:
                rows, cursor, started = 0, None, time.perf_counter()
                headers = {"Accept": "application/x-ndjson"} if fmt == "ndjson" else {}
                while True:
                    params = {"limit": size, **({"cursor": cursor} if cursor else {})}
                    response = session.get(
                        f"{url}/v1/flights", params=params, headers=headers, timeout=120
                    )
                    if fmt == "json":
                        body = response.json()
                        rows += len(body["data"])
                        cursor = body["next_cursor"]
                    else:
                        rows += parse_page("flights", response.content).num_rows
                        cursor = response.headers.get("Next-Cursor")
                    if cursor is None:
                        break
                timings[f"{fmt} {size}"].append(time.perf_counter() - started)
        with open(f"/proc/{proc.pid}/status") as handle:
            peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
        results["api_peak_rss_mb"] = round(peak / 1024)
        for label, values in timings.items():
            median = statistics.median(values)
            results["formats"][label] = {
                "median_seconds": round(median, 2),
                "records_per_second": round(rows / median),
            }
            print(
                f"flights, full year, {label.replace(' ', ' pages of ')}: {rows:,} records, "
                f"median {median:.2f}s of {repeat} -> {rows / median:,.0f} records/s (parsed)"
            )
        print(f"API peak RSS {peak / 1024:.0f} MB  load {load_average()}")
    finally:
        proc.terminate()
        proc.wait()
    results["load"] = load_average()
    write_result(settings.state_dir() / "bench", "source-api", results)
    return 0


def _variants() -> dict[str, dict[str, str]]:
    raw = os.environ.get("QUARTET_BENCH_VARIANTS")
    if not raw:
        return {}
    variants = json.loads(raw)
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise SystemExit('QUARTET_BENCH_VARIANTS must be {"label": {"ENV": "value", ...}, ...}')
    return variants


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def write_result(out_dir: Path, name: str, payload: dict) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"bench-{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"-> {path}")
    return path


def summarise(results: list[Measurement], names: list[str]) -> dict:
    summary = {}
    for each in names:
        mine = [m for m in results if m.name == each and m.exit_code == 0]
        if mine:
            summary[each] = {
                "median_seconds": round(statistics.median(m.seconds for m in mine), 1),
                "median_cpu_seconds": round(statistics.median(m.cpu_seconds for m in mine), 1),
                "median_peak_rss_mb": round(statistics.median(m.peak_rss_mb for m in mine)),
                "runs": len(mine),
            }
    return summary


def bench_reference(out_dir: Path, repeat: int) -> int:
    runs = []
    for i in range(repeat):
        seconds, counts = run_reference()
        runs.append({"seconds": round(seconds, 2), "cpu_seconds": round(_reference_cpu_seconds, 2)})
        print(
            f"run {i + 1}/{repeat} DuckDB-native reference (CSV -> raw -> compiled dbt SQL, one "
            f"process): {seconds:.1f}s  load {load_average()}"
        )
    print(json.dumps(counts))
    summary = {
        "median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
        "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 2),
    }
    write_result(
        out_dir,
        "reference",
        {"summary": {"reference": summary}, "runs": runs, "load": load_average()},
    )
    return 0


def bench_scaling(out_dir: Path, scales: tuple[int, ...], repeat: int) -> int:
    """``QUARTET_SCALE=N quartet run bare`` per scale, the run's own API counted."""
    from source_api.data import published_store, store_path

    env = {k: v for k, v in os.environ.items() if k not in (settings.SOURCE_API_URL_ENV,)}
    results: list[Measurement] = []
    builds = {}
    for n in scales:  # the published store of each scale, built once (reported, not timed in runs)
        fresh = not store_path(n).exists()
        started = time.perf_counter()
        published_store(n)
        builds[n] = {"seconds": round(time.perf_counter() - started, 1), "fresh": fresh}
        print(
            f"scale {n}: published store {'built' if fresh else 'found'} in {builds[n]['seconds']}s"
        )
    for i in range(repeat):
        for n in scales:
            reset("bare")
            m = measure(
                f"scale-{n}",
                [sys.executable, "-m", "core", "run"],
                {**env, "QUARTET_SCALE": str(n)},
                out_dir / f"scale-{n}-{i}.log",
                interval=0.5,
                scale=n,
            )
            results.append(m)
            print(
                f"run {i + 1}/{repeat} scale {n:3d}: {m.seconds:7.1f}s wall  {m.cpu_seconds:7.1f}s "
                f"CPU  peak tree RSS {m.peak_rss_mb:6.0f} MB  load {load_average()}  "
                + ("ok" if m.exit_code == 0 else f"FAILED (exit {m.exit_code})"),
                flush=True,
            )
    summary = summarise(results, [f"scale-{n}" for n in scales])
    base = summary.get(f"scale-{scales[0]}")
    for n in scales:
        s = summary.get(f"scale-{n}")
        if s and base:
            print(
                f"scale {n:3d}: {s['median_seconds']:7.1f}s ({s['median_seconds'] / base['median_seconds']:.2f}x "
                f"scale {scales[0]}), CPU {s['median_cpu_seconds']:.1f}s, peak {s['median_peak_rss_mb']} MB"
            )
    write_result(
        out_dir,
        "scaling",
        {
            "summary": summary,
            "stores": builds,
            "runs": [asdict(m) for m in results],
            "load": load_average(),
        },
    )
    return 0 if all(m.exit_code == 0 for m in results) else 1


def main(
    name: str,
    *,
    repeat: int = 3,
    scale: int = 1,
    as_of: str | None = None,
    charts: bool = True,
    only: list[str] | None = None,
) -> int:

    out_dir = settings.state_dir() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if name == "source-api":
            return bench_source_api(repeat)
        if name == "reference":
            return bench_reference(out_dir, repeat)
        if name == "scaling":
            return bench_scaling(out_dir, (1, 3, 10), repeat)
        if name == "charts":
            return 0
        names = only or list(settings.ORCHESTRATORS)
        if name == "deployed":
            from lab.bench_deployed import bench_deployed

            return bench_deployed(names, out_dir, repeat=repeat, as_of=as_of)
        if name == "all":
            from lab.bench_overhead import bench_overhead

            return bench_overhead(names, out_dir, repeat=repeat, as_of=as_of)
        return bench_pipelines(name, out_dir, repeat=repeat, scale=scale, as_of=as_of)
    finally:
        if charts and name != "source-api":
            render_charts(out_dir)


def alternate(
    names: list[str],
    env: dict[str, str],
    out_dir: Path,
    *,
    repeat: int,
    as_of: str | None,
    scale: int = 1,
    variants: dict[str, dict[str, str]] | None = None,
    label: str = "run",
) -> list[Measurement]:
    """``repeat`` rounds of one run of each of ``names`` in turn, each into a fresh warehouse.

    A variant's name runs bare's pipeline with the variant's environment (``"_root": DIR`` runs
    the bare pipeline of another checkout, with its own state under that root)."""
    variants = variants or {}
    results: list[Measurement] = []
    for i in range(repeat):
        for each in names:
            reset(each if each not in variants else "bare")
            extra = dict(variants.get(each, {}))
            root = extra.pop("_root", None)
            run_env = {**env, **extra}
            cwd = None
            if root:
                cwd = Path(root).resolve()
                run_env["PYTHONPATH"] = str(cwd)
                run_env["QUARTET_HOME"] = str(cwd)
                for stale in (cwd / "warehouse" / "bare.duckdb", cwd / ".quartet" / "bare"):
                    if stale.is_dir():
                        shutil.rmtree(stale, ignore_errors=True)
                    else:
                        stale.unlink(missing_ok=True)
            argv = command("bare" if each in variants else each, as_of)
            m = measure(each, argv, run_env, out_dir / f"{each}-{i}.log", cwd=cwd, scale=scale)
            results.append(m)
            status = (
                "ok"
                if m.exit_code == 0
                else f"FAILED (exit {m.exit_code}, see {out_dir}/{each}-{i}.log)"
            )
            print(
                f"{label} {i + 1}/{repeat} {each:12s} {m.seconds:7.1f}s  CPU {m.cpu_seconds:6.1f}s  "
                f"peak RSS {m.peak_rss_mb:7.0f} MB  load {load_average():4.1f}  {status}",
                flush=True,
            )
    return results


def bench_pipelines(name: str, out_dir: Path, *, repeat: int, scale: int, as_of: str | None) -> int:
    from core.source_service import SourceAPIConfig, running_source_api

    variants = _variants()
    names = ["bare", *variants] if name == "bare" else ["bare", name]
    env = {**os.environ, "QUARTET_SCALE": str(scale)}
    env.pop("QUARTET_BENCH_VARIANTS", None)
    with running_source_api(SourceAPIConfig(scale=scale)) as (url, token):
        env.update({settings.SOURCE_API_URL_ENV: url, settings.SOURCE_API_TOKEN_ENV: token})
        results = alternate(
            names, env, out_dir, repeat=repeat, as_of=as_of, scale=scale, variants=variants
        )
    summary = summarise(results, names)
    base = summary.get("bare")
    print(f"\nfull year (scale {scale}), medians of {repeat} alternating runs:")
    print(
        f"{'pipeline':12s} {'wall s':>8s} {'x bare':>7s} {'CPU s':>7s} {'x bare':>7s} "
        f"{'peak RSS MB':>12s} {'x bare':>7s}"
    )
    for each, s in summary.items():

        def ratio(key: str, s=s) -> float:
            return s[key] / base[key] if base and base[key] else float("nan")

        print(
            f"{each:12s} {s['median_seconds']:8.1f} {ratio('median_seconds'):7.2f} "
            f"{s['median_cpu_seconds']:7.1f} {ratio('median_cpu_seconds'):7.2f} "
            f"{s['median_peak_rss_mb']:12d} {ratio('median_peak_rss_mb'):7.2f}"
        )
    write_result(
        out_dir,
        name,
        {
            "summary": summary,
            "scale": scale,
            "variants": variants,
            "runs": [asdict(m) for m in results],
            "load": load_average(),
        },
    )
    return 0 if all(m.exit_code == 0 for m in results) else 1


def _latest(out_dir: Path, name: str) -> dict | None:
    """The newest ``bench-<name>-<stamp>.json``, with ``made`` (its stamp as a date) added."""
    found = sorted(out_dir.glob(f"bench-{name}-*.json"))
    if not found:
        return None
    data = json.loads(found[-1].read_text())
    stamp = found[-1].stem.rsplit("-", 1)[-1]
    data["made"] = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}"
    return data


def made_by(command: str, *sources: dict) -> str:
    """A chart's title line: the command that measured it and when (local time of the runs)."""
    dates = sorted({source["made"] for source in sources if source and "made" in source})
    return f"{command}  ({', '.join(dates)})"


def render_charts(out_dir: Path, img_dir: Path | None = None) -> list[Path]:
    """docs/img/bench-*.png from the latest bench JSONs (matplotlib, no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib comes with the dev group
        print("matplotlib is not installed: no charts (uv sync --group dev)")
        return []
    img_dir = img_dir or settings.REPO_ROOT / "docs" / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []

    # 1. bare (and variants/orchestrators measured beside it) vs the reference
    bars: dict[str, dict] = {}
    sources: list[dict] = []
    reference = _latest(out_dir, "reference")
    sources.append(reference or {})
    if reference:
        bars["DuckDB-native\nreference"] = dict(reference["summary"]["reference"])
    for source in ("bare", *settings.ORCHESTRATORS):
        data = _latest(out_dir, source)
        if not data:
            continue
        sources.append(data)
        for label, s in data["summary"].items():
            if label == "bare" and source != "bare":
                continue  # an orchestrator bench's bare is shown by the bare bench
            bars.setdefault(label, s)
    if bars:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        labels = list(bars)
        wall = [bars[k].get("median_seconds", 0) for k in labels]
        cpu = [bars[k].get("median_cpu_seconds", 0) for k in labels]
        rss = [bars[k].get("median_peak_rss_mb") for k in labels]
        x = range(len(labels))
        ax1.bar([i - 0.2 for i in x], wall, width=0.4, label="wall s", color="#4c72b0")
        ax1.bar([i + 0.2 for i in x], cpu, width=0.4, label="CPU s (tree)", color="#dd8452")
        ax1.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
        ax1.set_ylabel("seconds (median)")
        ax1.set_title("Full year: time")
        ax1.legend(fontsize=8)
        for i, w, c in zip(x, wall, cpu, strict=True):
            ax1.annotate(f"{w:.1f}", (i - 0.2, w), ha="center", va="bottom", fontsize=7)
            ax1.annotate(f"{c:.1f}", (i + 0.2, c), ha="center", va="bottom", fontsize=7)
        ax2.bar(list(x), [r or 0 for r in rss], color="#55a868")
        for i, r in zip(x, rss, strict=True):  # a missing figure is said, not drawn as 0 MB
            text = f"{r:.0f}" if r else "not measured"
            ax2.annotate(text, (i, r or 0), ha="center", va="bottom", fontsize=7)
        ax2.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
        ax2.set_ylabel("peak RSS of the process tree, MB")
        ax2.set_title("Full year: memory")
        fig.suptitle(
            made_by("quartet bench bare; quartet bench reference (medians)", *sources),
            fontsize=10,
        )
        fig.tight_layout()
        path = img_dir / "bench-bare.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # 2. the scaling curve
    scaling = _latest(out_dir, "scaling")
    if scaling and scaling["summary"]:
        points = sorted((int(k.split("-")[1]), v) for k, v in scaling["summary"].items())
        scales = [n for n, _ in points]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        wall = [v["median_seconds"] for _, v in points]
        ax1.plot(scales, wall, "o-", label="wall s")
        ax1.plot(scales, [v["median_cpu_seconds"] for _, v in points], "s--", label="CPU s (tree)")
        ax1.plot(
            scales, [wall[0] * n / scales[0] for n in scales], ":", color="grey", label="linear"
        )
        ax1.set_xlabel("scale (x 2013: 346k flight records each)")
        ax1.set_ylabel("seconds")
        ax1.set_title("QUARTET_SCALE=N quartet run bare: time")
        ax1.legend(fontsize=8)
        ax2.plot(scales, [v["median_peak_rss_mb"] for _, v in points], "o-", color="#55a868")
        ax2.axhline(1536, color="red", linestyle=":", label="1.5 GB")
        ax2.set_xlabel("scale")
        ax2.set_ylabel("peak RSS of the process tree, MB")
        ax2.set_title("memory (API + pipeline + dbt)")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8)
        for ax in (ax1, ax2):
            ax.set_xticks(scales)
        fig.suptitle(made_by("quartet bench scaling (medians)", scaling), fontsize=10)
        fig.tight_layout()
        path = img_dir / "bench-scaling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    # 3. the deployed topologies beside bare
    deployed = _latest(out_dir, "deployed")
    if deployed and deployed["deployed"]:
        written.append(_deployed_chart(plt, deployed, img_dir / "bench-deployed.png"))
    # 4. the overhead comparison: dev and deployed beside bare (`quartet bench all`)
    overhead = _latest(out_dir, "overhead")
    if overhead and overhead["orchestrators"]:
        from lab.bench_overhead import chart

        written.append(chart(plt, overhead, img_dir / "bench-overhead.png"))
    for path in written:
        print(f"chart -> {path}")
    return written


def _deployed_chart(plt, data: dict, path: Path) -> Path:
    """Run time beside bare, and each topology's idle memory stacked by service."""
    results = data["deployed"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = ["bare", *(f"{n}\n--deployed" for n in results)]
    wall = [data["bare"]["median_seconds"] or 0] + [
        r.get("median_seconds") or 0 for r in results.values()
    ]
    ax1.bar(range(len(labels)), wall, color=["#8c8c8c"] + ["#4c72b0"] * len(results))
    for i, w in enumerate(wall):
        ax1.annotate(f"{w:.1f}", (i, w), ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(range(len(labels)), labels, fontsize=8)
    ax1.set_ylabel("seconds, submission to success (median)")
    ax1.set_title(
        "A run on the running services"
        + (f" (as of {data['as_of']})" if data["as_of"] else " (full year)")
    )
    ax1.set_ylim(top=max(wall) * 1.1)
    idle_panel(plt, ax2, results)
    fig.suptitle(made_by("quartet bench deployed (medians)", data), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def idle_panel(plt, ax, results: dict[str, dict]) -> None:
    """Each deployed topology's idle RSS, stacked by service, with its time to ready."""
    names = list(results)
    bottoms = [0.0] * len(names)
    services = sorted({s for r in results.values() for s in r.get("idle_rss_mb", {})})
    colors = plt.get_cmap("tab20").colors
    for k, service in enumerate(services):
        values = [results[n].get("idle_rss_mb", {}).get(service, 0) for n in names]
        ax.bar(range(len(names)), values, bottom=bottoms, label=service, color=colors[k % 20])
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for i, n in enumerate(names):
        ready = results[n].get("up_seconds") or 0
        ax.annotate(
            f"{bottoms[i]:.0f} MB, ready in {ready:.0f}s",
            (i, bottoms[i]),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_ylim(top=max([*bottoms, 1.0]) * 1.25)  # room for the labels and the legend
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("idle RSS by service, MB")
    ax.set_title("The topology at rest")
    ax.legend(fontsize=6, ncol=4, loc="upper left")
