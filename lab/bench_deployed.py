"""``quartet bench deployed``: each orchestrator's deployed topology, measured beside bare.

For each orchestrator, with the services started here and stopped at the end:

* **time to ready**: the wall time of ``quartet up <name>`` from nothing running (the shared
  PostgreSQL server already up) until it returns, i.e. until every service answers and the
  orchestrator has registered what it needs (code location loaded, DAGs parsed, deployments
  and automations created, schedule and watcher on the server);
* **idle memory**: each service's resident memory (its whole process tree) 15 s after ``up``;
* **runs**: ``quartet run <name> --deployed`` (full year unless ``--as-of``), submitted through
  the orchestrator's API and followed until it ends, alternating with bare's run so that a noisy
  neighbour hits both alike. For each run: wall seconds from submission to success, the CPU
  seconds of the services and the submitter (``/proc`` times of every process in their trees,
  before and after), the peak resident memory of services plus submitter, and the latency from
  submission to the start of the first unit as the follower reports it (its first unit line,
  minus that unit's own seconds).

Medians and ratios to bare are printed and written to ``.quartet/bench/bench-deployed-*.json``;
``docs/img/bench-deployed.png`` is rendered from the latest one. One source API, started here,
serves every run (bare's and the services') and is not counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from core import settings
from lab.bench import command, load_average, measure, reset, tree, tree_rss_kb, write_result

IDLE_SETTLE_SECONDS = 15
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of the children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / _TICK


def _trees_cpu(roots: list[int]) -> float:
    return sum(_cpu_seconds(pid) for root in roots for pid in tree(root))


def _quartet(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(settings.venv_python("base")), "-m", "lab.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=settings.REPO_ROOT,
    )


def _services(name: str, env: dict) -> dict[str, int]:
    status = json.loads(_quartet("status", name, "--json", env=env).stdout)
    return {service: s["pid"] for service, s in status.items() if s.get("running")}


def first_unit_latency(name: str, lines: list[tuple[float, str]], submitted: float) -> float | None:
    """Seconds from submission to the first unit's start, as the follower printed it."""
    pattern = re.compile(rf"^\[{name}\] (?:ingest|dbt)\s+\S+\s+([\d.]+)s")
    for seen, line in lines:
        match = pattern.match(line)
        if match:
            return round(max(0.0, seen - float(match.group(1)) - submitted), 1)
    return None


def run_deployed(name: str, env: dict, as_of: str | None, log_path: Path, services: dict) -> dict:
    """One ``quartet run <name> --deployed``: wall, CPU and memory of services + submitter."""
    flags = ["--as-of", as_of] if as_of else []
    argv = [str(settings.venv_python(name)), "-m", f"orchestrators.{name}", "run", "--deployed"]
    roots = list(services.values())
    cpu_before = _trees_cpu(roots)
    peak, lines, done = 0, [], threading.Event()
    submitted = time.perf_counter()
    proc = subprocess.Popen(
        [*argv, *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=settings.REPO_ROOT,
    )

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(tree_rss_kb(pid) for pid in [*roots, proc.pid]))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with open(log_path, "w") as log:
        for line in proc.stdout:
            lines.append((time.perf_counter(), line.rstrip("\n")))
            log.write(line)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - submitted
    done.set()
    sampler.join()
    return {
        "seconds": round(seconds, 1),
        "exit_code": os.waitstatus_to_exitcode(status),
        "cpu_seconds": round(_trees_cpu(roots) - cpu_before + usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(peak / 1024),
        "first_unit_latency_seconds": first_unit_latency(name, lines, submitted),
    }


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None and r["exit_code"] == 0]
    return round(statistics.median(values), 1) if values else None


@contextlib.contextmanager
def services_env() -> Iterator[dict[str, str]]:
    """The environment every measured run gets: one source API and one PostgreSQL server (the
    deployed services' metadata), started here for the whole bench and stopped at its end."""
    from core.source_service import SourceAPIConfig, running_source_api
    from lab import postgres

    server = postgres.start(prefer_container=True)
    try:
        with running_source_api(SourceAPIConfig()) as (url, token):
            yield {
                **os.environ,
                settings.SOURCE_API_URL_ENV: url,
                settings.SOURCE_API_TOKEN_ENV: token,
                postgres.URL_ENV: server.url("postgres"),
            }
    finally:
        server.stop()


def bench_deployed(names: list[str], out_dir: Path, *, repeat: int, as_of: str | None) -> int:
    results: dict[str, dict] = {}
    bare_runs: list[dict] = []
    with services_env() as env:
        for name in names:
            results[name] = bench_one(name, env, out_dir, repeat, as_of, bare_runs)
    bare = {
        "median_seconds": _median(bare_runs, "seconds"),
        "median_cpu_seconds": _median(bare_runs, "cpu_seconds"),
        "median_peak_rss_mb": _median(bare_runs, "peak_rss_mb"),
        "runs": bare_runs,
    }
    _print(results, bare, as_of)
    write_result(
        out_dir,
        "deployed",
        {"bare": bare, "deployed": results, "as_of": as_of, "load": load_average()},
    )
    ok = all(r["exit_code"] == 0 for r in bare_runs) and all(
        r["exit_code"] == 0 for res in results.values() for r in res["runs"]
    )
    return 0 if ok and all(res["up_exit_code"] == 0 for res in results.values()) else 1


def bench_one(
    name: str,
    env: dict,
    out_dir: Path,
    repeat: int,
    as_of: str | None,
    bare_runs: list[dict],
    *,
    warmup_as_of: str | None = None,
) -> dict:
    """``quartet up``, idle RSS, then bare and the deployed run alternately; ``quartet down``.

    With ``warmup_as_of``, one untimed run of each up to that day comes first, so that the first
    timed run finds what a user's second run finds (imports compiled, caches filled)."""
    started = time.perf_counter()
    up = _quartet("up", name, env=env, timeout=900)
    up_seconds = round(time.perf_counter() - started, 1)
    result: dict = {"up_seconds": up_seconds, "up_exit_code": up.returncode, "runs": []}
    try:
        if up.returncode != 0:
            print(f"{name}: `quartet up {name}` failed:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
            return result
        time.sleep(IDLE_SETTLE_SECONDS)
        services = _services(name, env)
        result["idle_rss_mb"] = {s: round(tree_rss_kb(pid) / 1024) for s, pid in services.items()}
        print(
            f"{name}: ready in {up_seconds:.1f}s; idle RSS "
            + ", ".join(f"{s} {mb} MB" for s, mb in result["idle_rss_mb"].items()),
            flush=True,
        )
        if warmup_as_of:
            for each in ("bare", name):
                reset(each)
            measure("bare", command("bare", warmup_as_of), env, out_dir / "warmup-bare.log")
            run_deployed(name, env, warmup_as_of, out_dir / f"warmup-{name}.log", services)
        for i in range(repeat):
            reset("bare")
            m = measure("bare", command("bare", as_of), env, out_dir / f"deployed-bare-{i}.log")
            bare_runs.append(
                {
                    "seconds": round(m.seconds, 1),
                    "exit_code": m.exit_code,
                    "cpu_seconds": round(m.cpu_seconds, 1),
                    "peak_rss_mb": round(m.peak_rss_mb),
                }
            )
            reset(name)
            run = run_deployed(name, env, as_of, out_dir / f"deployed-{name}-{i}.log", services)
            result["runs"].append(run)
            print(
                f"run {i + 1}/{repeat} bare {m.seconds:6.1f}s | {name} --deployed "
                f"{run['seconds']:6.1f}s (exit {run['exit_code']}, CPU {run['cpu_seconds']}s, "
                f"peak RSS {run['peak_rss_mb']} MB, first unit after "
                f"{run['first_unit_latency_seconds']}s)  load {load_average()}",
                flush=True,
            )
    finally:
        down = _quartet("down", name, env=env, timeout=300)
        if down.returncode != 0:
            print(f"{name}: `quartet down {name}` failed: {down.stderr[-2000:]}")
    for key in ("seconds", "cpu_seconds", "peak_rss_mb", "first_unit_latency_seconds"):
        result[f"median_{key}"] = _median(result["runs"], key)
    return result


def _print(results: dict, bare: dict, as_of: str | None) -> None:
    base = bare["median_seconds"]
    print(f"\n{'full year' if not as_of else f'as of {as_of}'}, medians, deployed beside bare:")
    print(
        f"{'pipeline':10s} {'ready s':>8s} {'idle MB':>8s} {'run s':>7s} {'x bare':>7s} "
        f"{'CPU s':>7s} {'peak MB':>8s} {'1st unit s':>10s}"
    )
    print(
        f"{'bare':10s} {'':>8s} {'':>8s} {base or 0:7.1f} {1:7.2f} "
        f"{bare['median_cpu_seconds'] or 0:7.1f} {bare['median_peak_rss_mb'] or 0:8.0f}"
    )
    for name, r in results.items():
        seconds = r.get("median_seconds")
        ratio = seconds / base if seconds and base else float("nan")
        print(
            f"{name:10s} {r['up_seconds']:8.1f} {sum(r.get('idle_rss_mb', {}).values()):8d} "
            f"{seconds or float('nan'):7.1f} {ratio:7.2f} {r.get('median_cpu_seconds') or 0:7.1f} "
            f"{r.get('median_peak_rss_mb') or 0:8.0f} {r.get('median_first_unit_latency_seconds') or 0:10.1f}"
        )
