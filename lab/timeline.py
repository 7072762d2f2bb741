"""``quartet timeline``: where each pipeline's time goes, read from the orchestrator's own records.

For each pipeline, one full-year dev-mode run (``quartet run NAME --as-of D``) in a fresh
``QUARTET_HOME`` of its own, then the start and end of every unit (an ingestion resource, a dbt
model with its tests) as the orchestrator recorded them: ``python -m orchestrators.<name>.timeline
--home H`` in that orchestrator's environment reads Dagster's event log, Airflow's task
instances, Prefect's task runs or Temporal's workflow history and prints JSON. This module
imports no orchestrator. Bare keeps no records: its trace is its own progress lines, each stamped
as it arrives (a unit ends when its line is printed and began its printed seconds earlier).

Each run's wall time is split into **work** (the time the same units take in bare) and
**orchestration**: start-up before the first unit, gaps between units, per-unit overhead beyond
bare's, and the wind-down after the last unit. The JSON goes to ``.quartet/bench/``, the Gantt
charts to ``docs/img/timeline-<name>.png`` and the table into the Timelines section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core import settings

AS_OF = "2013-12-31"
DOC = settings.REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Timelines"
KINDS = ("ingest", "dbt")
COLORS = {"ingest": "#4c72b0", "dbt": "#55a868", "test": "#c4ad66"}

#: bare's progress lines: ``[bare] ingest as of ...: ... in 12.3s`` and
#: ``[bare] dbt     stg_flights    0.4s  27,004 rows, 7 tests passed`` (core.kit.progress: a
#: model's line once it and its tests ended, the seconds being theirs together)
BARE_INGEST = re.compile(r"^\[bare\] ingest .* in (?P<seconds>[\d.]+)s$")
BARE_NODE = re.compile(r"^\[bare\] dbt\s+(?P<name>\S+)\s+(?P<seconds>[\d.]+)s\b")


def reader_home(argv: list[str] | None, *, prog: str) -> Path:
    """The ``--home`` of an orchestrator's reader (``python -m orchestrators.<name>.timeline``),
    exported as QUARTET_HOME before the orchestrator reads its settings from it."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--home", type=Path, required=True, help="the run's QUARTET_HOME")
    home = parser.parse_args(argv).home.resolve()
    os.environ["QUARTET_HOME"] = str(home)
    return home


def command(name: str, as_of: str) -> list[str]:
    """The user's dev-mode run, in the pipeline's own environment."""
    if name == "bare":
        return [sys.executable, "-m", "core", "run", "--as-of", as_of]
    return [str(settings.venv_python(name)), "-m", f"orchestrators.{name}", "run", "--as-of", as_of]


def record(name: str, home: Path, as_of: str) -> dict:
    """Run ``name`` once in the fresh ``home``; its output lines stamped as they arrive."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {**os.environ, "QUARTET_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    # the run starts its own source API, as a user's run does
    for key in (settings.SOURCE_API_URL_ENV, settings.SOURCE_API_TOKEN_ENV):
        env.pop(key, None)
    argv = command(name, as_of)
    lines = []
    started = time.time()
    with subprocess.Popen(
        argv,
        env=env,
        cwd=settings.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        for line in proc.stdout:
            lines.append([time.time(), line.rstrip("\n")])
        code = proc.wait()
    ended = time.time()
    (home / "timeline-run.log").write_text(
        "".join(f"{stamp:.3f} {text}\n" for stamp, text in lines)
    )
    return {
        "name": name,
        "as_of": as_of,
        "command": f"quartet run {name} --as-of {as_of}",
        "home": str(home),
        "exit_code": code,
        "wall": {"start": started, "end": ended},
        "load": round(os.getloadavg()[0], 1),
        "lines": lines,
    }


def bare_units(lines: list[list]) -> list[dict]:
    """Bare's units from its stamped progress lines: one ingest (every resource in one dlt
    load), then each dbt model with its tests; a unit ends when its line arrives."""
    units = []
    for stamp, text in lines:
        if found := BARE_INGEST.match(text):
            units.append(_unit("all resources", "ingest", stamp, float(found["seconds"])))
        elif found := BARE_NODE.match(text):
            units.append(_unit(found["name"], "dbt", stamp, float(found["seconds"])))
    return units


def _unit(unit: str, kind: str, end: float, seconds: float) -> dict:
    return {"unit": unit, "kind": kind, "start": end - seconds, "end": end}


def read_records(name: str, home: Path) -> dict:
    """The orchestrator's own records of the run in ``home``, read in its own environment."""
    result = subprocess.run(
        [
            str(settings.venv_python(name)),
            "-m",
            f"orchestrators.{name}.harness.timeline",
            "--home",
            str(home),
        ],
        cwd=settings.REPO_ROOT,
        env={**os.environ, "QUARTET_HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(
            f"orchestrators.{name}.harness.timeline failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    # the JSON is the last line: an orchestrator may say something on stdout before it
    return json.loads(result.stdout.strip().splitlines()[-1])


def timeline(name: str, root: Path, as_of: str) -> dict:
    """One run of ``name`` and its timeline (wall clock, the run's own span, its units)."""
    run = record(name, root / name, as_of)
    if run["exit_code"]:
        tail = "\n".join(text for _, text in run["lines"][-20:])
        raise RuntimeError(f"quartet run {name} failed ({run['exit_code']}):\n{tail}")
    return read(run)


def read(run: dict) -> dict:
    """``run``'s units: bare's from its stamped lines, an orchestrator's from its records."""
    if run["name"] == "bare":
        units = bare_units(run["lines"])
        run["run"] = {"start": run["wall"]["start"], "end": run["wall"]["end"], "source": "stdout"}
    else:
        records = read_records(run["name"], Path(run["home"]))
        units = records.pop("units")
        run["run"] = records
    run["units"] = sorted(units, key=lambda u: (u["start"], u["end"]))
    return run


# --- the split --------------------------------------------------------------------------------


def busy(units: list[dict]) -> float:
    """Seconds in which at least one of ``units`` runs (overlapping units counted once)."""
    total, reach = 0.0, None
    for start, end in sorted((u["start"], u["end"]) for u in units):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def _kind(unit: dict) -> str:
    """ingest or dbt (a dbt test is dbt work)."""
    return "ingest" if unit["kind"] == "ingest" else "dbt"


def split(run: dict, bare: dict) -> dict:
    """``run``'s wall time as work (bare's time for the same units) plus orchestration."""
    units = run["units"]
    wall = run["wall"]["end"] - run["wall"]["start"]
    first = min(u["start"] for u in units)
    last = max(u["end"] for u in units)
    spent = {k: busy([u for u in units if _kind(u) == k]) for k in KINDS}
    work = {k: busy([u for u in bare["units"] if _kind(u) == k]) for k in KINDS}
    covered = busy(units)
    row = {
        "wall": wall,
        "work": sum(work.values()),
        "startup": first - run["wall"]["start"],
        "gaps": (last - first) - covered,
        # beyond bare's time for the same units (negative: faster than bare's)
        "overhead": {k: spent[k] - work[k] for k in KINDS},
        "winddown": run["wall"]["end"] - last,
        "units": len(units),
    }
    # each phase from its first unit's start to its last unit's end, and the hand-off between
    # them: robust where an orchestrator's per-node times are approximate (prefect-dbt)
    of_kind = {k: [u for u in units if _kind(u) == k] for k in KINDS}
    row["phases"] = {
        k: max(u["end"] for u in mine) - min(u["start"] for u in mine)
        for k, mine in of_kind.items()
    }
    row["handoff"] = min(u["start"] for u in of_kind["dbt"]) - max(
        u["end"] for u in of_kind["ingest"]
    )
    # kinds may overlap each other (none do in these dev modes): what they share is not overhead
    row["overlap"] = sum(spent.values()) - covered
    row["orchestration"] = wall - row["work"]
    return row


# --- charts and the doc -----------------------------------------------------------------------


def chart(run: dict, path: Path, *, xmax: float) -> Path:
    """A Gantt chart of ``run``'s units, in seconds since its command started."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    zero = run["wall"]["start"]
    units = run["units"]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.16 * len(units)))
    for row, unit in enumerate(units):
        color = COLORS.get(unit["kind"], "#8c8c8c")
        # an edge of the bar's colour: a unit of a few milliseconds stays visible as a line
        ax.barh(
            row,
            unit["end"] - unit["start"],
            left=unit["start"] - zero,
            color=color,
            edgecolor=color,
            linewidth=0.8,
            height=0.8,
        )
    ax.axvline(run["wall"]["end"] - zero, color="black", linewidth=0.8)
    if run["run"].get("source") != "stdout":
        ax.axvspan(run["run"]["start"] - zero, run["run"]["end"] - zero, color="#eeeeee", zorder=0)
    labels = [u["unit"] if len(u["unit"]) <= 40 else u["unit"][:39] + "…" for u in units]
    ax.set_yticks(range(len(units)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, xmax)
    ax.set_xlabel("seconds since `quartet run` started (black line: the command ended)")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(zero))
    ax.set_title(
        f"quartet timeline ({when}): {run['command']}: {run['wall']['end'] - zero:.1f}s wall, "
        f"{len(units)} units (load {run['load']})",
        fontsize=9,
    )
    legend = [Patch(color=c, label=k) for k, c in COLORS.items() if k in {u["kind"] for u in units}]
    if run["run"].get("source") != "stdout":
        legend.append(Patch(color="#eeeeee", label="the run, as the orchestrator recorded it"))
    ax.legend(handles=legend, fontsize=7, loc="upper right")  # units run top-left to bottom-right
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(runs: dict[str, dict]) -> str:
    bare = runs["bare"]
    lines = [
        "| pipeline | wall | beyond bare's wall | work (bare's units) | orchestration | "
        "start-up | gaps | ingest overhead | dbt overhead | wind-down | units | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    bare_wall = bare["wall"]["end"] - bare["wall"]["start"]
    for name, run in runs.items():
        s = split(run, bare)
        lines.append(
            f"| {name} | {s['wall']:.1f} s | {s['wall'] - bare_wall:+.1f} s | {s['work']:.1f} s | "
            f"{s['orchestration']:.1f} s | "
            f"{s['startup']:.1f} s | {s['gaps']:.1f} s | {s['overhead']['ingest']:+.1f} s | "
            f"{s['overhead']['dbt']:+.1f} s | {s['winddown']:.1f} s | {s['units']} | "
            f"{run['load']} |"
        )
    return "\n".join(lines)


def phases(runs: dict[str, dict]) -> str:
    """Each run's ingestion and dbt phases (first unit's start to last unit's end)."""
    bare = runs["bare"]
    lines = [
        "| pipeline | start-up | ingestion phase | ingestion to dbt | dbt phase | wind-down |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, run in runs.items():
        s = split(run, bare)
        lines.append(
            f"| {name} | {s['startup']:.1f} s | {s['phases']['ingest']:.1f} s | "
            f"{s['handoff']:.1f} s | {s['phases']['dbt']:.1f} s | {s['winddown']:.1f} s |"
        )
    return "\n".join(lines)


def render(runs: dict[str, dict], img_dir: Path, doc: Path | None) -> list[Path]:
    xmax = max(r["wall"]["end"] - r["wall"]["start"] for r in runs.values()) * 1.02
    written = [
        chart(run, img_dir / f"timeline-{name}.png", xmax=xmax) for name, run in runs.items()
    ]
    if doc is not None and "bare" in runs:
        write_section(doc, runs)
    return written


def write_section(doc: Path, runs: dict[str, dict]) -> None:
    """Replace (or add) the Timelines section's generated part."""
    from lab.docs import write_generated

    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(runs["bare"]["wall"]["start"]))
    generated = "\n".join(
        [
            f"Runs of {stamp} UTC, as of {runs['bare']['as_of']}, one after another, each in a "
            "fresh QUARTET_HOME (seconds; load: the 1-minute load average as each run ended):",
            "",
            table(runs),
            "",
            "The same runs by phase (each from its first unit's start to its last unit's end):",
            "",
            phases(runs),
            "",
            *(f"![{name}](img/timeline-{name}.png)\n" for name in runs),
        ]
    )
    write_generated(doc, "timeline", generated, heading=SECTION)


def latest(out_dir: Path) -> dict | None:
    found = sorted(out_dir.glob("timeline-*.json"))
    return json.loads(found[-1].read_text()) if found else None


def main(
    names: list[str],
    *,
    as_of: str = AS_OF,
    root: Path | None = None,
    doc: bool = True,
    reread: bool = False,
) -> int:
    """Record ``names`` (``reread``: read the records of their last recorded runs again; no
    names: render the latest JSON only); write the JSON, the charts and the doc."""
    unknown = set(names) - set(settings.PIPELINE_NAMES)
    if unknown:
        raise SystemExit(f"quartet timeline: no pipeline {', '.join(sorted(unknown))}")
    out_dir = settings.state_dir() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    if names:
        root = root or settings.state_dir() / "timeline"
        runs = {}
        for name in names:
            kept = out_dir / "timeline-runs" / f"{name}.json"
            if reread:
                runs[name] = json.loads(kept.read_text())
                continue
            print(f"== quartet run {name} --as-of {as_of} (QUARTET_HOME={root / name})", flush=True)
            runs[name] = run = record(name, root / name, as_of)
            seconds = run["wall"]["end"] - run["wall"]["start"]
            print(f"== {name}: exit {run['exit_code']} in {seconds:.1f}s", flush=True)
            if run["exit_code"]:
                tail = "\n".join(text for _, text in run["lines"][-20:])
                raise SystemExit(f"quartet run {name} failed ({run['exit_code']}):\n{tail}")
            kept.parent.mkdir(exist_ok=True)
            kept.write_text(json.dumps(run))  # the records can be read again (--reread)
        # read after every run: an orchestrator's reader starts nothing while another one runs
        for name, run in runs.items():
            read(run)
            print(f"== {name}: {len(run['units'])} units from {run['run']['source']}", flush=True)
        payload = {"as_of": as_of, "runs": runs}
        path = out_dir / f"timeline-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps(payload, indent=1))
        print(f"-> {path}")
    else:
        payload = latest(out_dir)
        if payload is None:
            print(f"no timeline JSON in {out_dir}: run `quartet timeline all` first")
            return 1
    runs = payload["runs"]
    if "bare" in runs:
        print(table(runs))
        print(phases(runs))
    for path in render(runs, settings.REPO_ROOT / "docs" / "img", DOC if doc else None):
        print(f"chart -> {path}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.timeline", description=__doc__)
    # (no choices=: argparse checks an empty nargs="*" against them; main() names a wrong one)
    p.add_argument(
        "names", nargs="*", metavar="{" + ",".join(["all", *settings.PIPELINE_NAMES]) + "}"
    )
    p.add_argument("--as-of", default=AS_OF)
    p.add_argument("--root", type=Path, help="where the fresh homes go (default .quartet/timeline)")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--reread", action="store_true", help="read the last recorded runs again")
    args = p.parse_args(argv)
    names = list(settings.PIPELINE_NAMES) if "all" in args.names else args.names
    return main(names, as_of=args.as_of, root=args.root, doc=not args.no_doc, reread=args.reread)


if __name__ == "__main__":
    sys.exit(cli())
