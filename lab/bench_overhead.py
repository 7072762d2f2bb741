"""``quartet bench all``: what each orchestrator adds to the same work, dev and deployed, in one run.

One command, one session, for each orchestrator in turn (``--only`` to narrow):

1. **dev mode**: ``quartet run bare`` and ``quartet run NAME`` alternately, ``--repeat`` times
   each, every run into a fresh warehouse (orchestrator homes kept, as a user's second run
   finds them). No service of the orchestrator is running.
2. **deployed mode**: ``quartet up NAME`` timed until it returns ready (time to healthy), each
   service's idle RSS, then ``quartet run bare`` and ``quartet run NAME --deployed`` (submitted
   through the orchestrator's API, timed from submission to success) alternately, then
   ``quartet down NAME``.

Every ratio is taken to the bare runs of the same block, so that the load of the moment (this
machine is shared) hits both sides of a ratio alike; medians of ``--repeat`` runs. One source
API and one PostgreSQL server (the deployed services' metadata) are started here and serve
every run. Each block starts with an untimed January run of each side (one-time costs of a
home are not what a user's runs pay each time). The JSON goes to ``.quartet/bench/bench-overhead-*.json``; ``docs/img/bench-overhead.png``
and the "Overhead" section of docs/benchmarks.md are generated from it (``quartet bench charts``
re-renders them from the latest JSON).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from core import settings
from lab.bench import alternate, load_average, summarise

#: the overhead goals: a full-year run at most this many times bare's, same session
DEV_GOAL = 2.0
DEPLOYED_GOAL = 1.3
#: each block starts with one untimed run of each side up to this day (not counted): the first
#: run in a home pays one-time costs (bytecode, dbt's manifest, an orchestrator's migrations) that
#: a user's later runs do not, and that would otherwise decide a median of three
WARMUP_AS_OF = "2013-01-31"
DOC = settings.REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Overhead: dev and deployed beside bare"


def bench_overhead(names: list[str], out_dir: Path, *, repeat: int, as_of: str | None) -> int:
    from lab.bench_deployed import bench_one, services_env

    results: dict[str, dict] = {}
    payload = {
        "as_of": as_of,
        "repeat": repeat,
        "warmup_as_of": WARMUP_AS_OF,
        "started": time.time(),
        "goals": {"dev": DEV_GOAL, "deployed": DEPLOYED_GOAL},
        "orchestrators": results,
    }
    stamp = time.strftime("%Y%m%dT%H%M%S")
    with services_env() as env:
        for name in names:
            print(f"\n== {name}: dev mode, alternating with bare", flush=True)
            alternate(["bare", name], env, out_dir, repeat=1, as_of=WARMUP_AS_OF, label="warm-up")
            runs = alternate(["bare", name], env, out_dir, repeat=repeat, as_of=as_of)
            dev = summarise(runs, ["bare", name])
            print(f"\n== {name}: deployed mode, alternating with bare", flush=True)
            bare_runs: list[dict] = []
            deployed = bench_one(
                name, env, out_dir, repeat, as_of, bare_runs, warmup_as_of=WARMUP_AS_OF
            )
            results[name] = {
                "dev": dev.get(name),
                "dev_bare": dev.get("bare"),
                "dev_exit_codes": [m.exit_code for m in runs if m.name == name],
                "deployed": deployed,
                "deployed_bare": {
                    "median_seconds": _median([r["seconds"] for r in bare_runs]),
                    "median_cpu_seconds": _median([r["cpu_seconds"] for r in bare_runs]),
                    "runs": len(bare_runs),
                },
            }
            # after each orchestrator, so that a bench stopped part-way keeps what it measured
            payload.update(ended=time.time(), load=load_average())
            path = out_dir / f"bench-overhead-{stamp}.json"
            path.write_text(json.dumps(payload, indent=2))
            write_doc(payload)
    print(f"-> {path}\n\n" + table(payload))
    ok = all(
        r["dev"]
        and all(code == 0 for code in r["dev_exit_codes"])
        and r["deployed"]["up_exit_code"] == 0
        and r["deployed"]["runs"]
        and all(run["exit_code"] == 0 for run in r["deployed"]["runs"])
        for r in results.values()
    )
    return 0 if ok else 1


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def ratios(result: dict) -> tuple[float | None, float | None]:
    """(dev, deployed): each median over the median of bare's runs in the same block."""
    dev, dev_bare = result.get("dev"), result.get("dev_bare")
    deployed, deployed_bare = result["deployed"], result["deployed_bare"]
    dev_ratio = (
        dev["median_seconds"] / dev_bare["median_seconds"]
        if dev and dev_bare and dev_bare["median_seconds"]
        else None
    )
    deployed_ratio = (
        deployed["median_seconds"] / deployed_bare["median_seconds"]
        if deployed.get("median_seconds") and deployed_bare["median_seconds"]
        else None
    )
    return dev_ratio, deployed_ratio


def _x(value: float | None, goal: float) -> str:
    if value is None:
        return "failed"
    return f"**{value:.2f}x**" + (" ✓" if value <= goal else "")


def table(payload: dict) -> str:
    """The comparison as a Markdown table (what the docs show and the command prints)."""
    rows = [
        "| orchestrator | dev run | its bare | dev x bare | deployed run | its bare | deployed x bare "
        "| CPU x bare (dev / deployed) | ready in | idle RSS | first unit after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in payload["orchestrators"].items():
        dev, dev_bare = r.get("dev") or {}, r.get("dev_bare") or {}
        dep, dep_bare = r["deployed"], r["deployed_bare"]
        dev_ratio, dep_ratio = ratios(r)
        cpu_dev = (
            dev["median_cpu_seconds"] / dev_bare["median_cpu_seconds"]
            if dev and dev_bare.get("median_cpu_seconds")
            else None
        )
        cpu_dep = (
            dep["median_cpu_seconds"] / dep_bare["median_cpu_seconds"]
            if dep.get("median_cpu_seconds") and dep_bare.get("median_cpu_seconds")
            else None
        )
        idle = sum(dep.get("idle_rss_mb", {}).values())

        def s(value: float | None) -> str:
            return f"{value:.1f} s" if value is not None else "-"

        rows.append(
            f"| {name} | {s(dev.get('median_seconds'))} | {s(dev_bare.get('median_seconds'))} "
            f"| {_x(dev_ratio, payload['goals']['dev'])} | {s(dep.get('median_seconds'))} "
            f"| {s(dep_bare.get('median_seconds'))} | {_x(dep_ratio, payload['goals']['deployed'])} "
            f"| {f'{cpu_dev:.2f}' if cpu_dev else '-'} / {f'{cpu_dep:.2f}' if cpu_dep else '-'} "
            f"| {s(dep.get('up_seconds'))} | {idle} MB "
            f"| {s(dep.get('median_first_unit_latency_seconds'))} |"
        )
    return "\n".join(rows)


def write_doc(payload: dict, doc: Path = DOC) -> None:
    from lab.docs import write_generated

    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(payload["started"]))
    minutes = (payload["ended"] - payload["started"]) / 60
    span = f"as of {payload['as_of']}" if payload["as_of"] else "full year"
    goals = payload["goals"]
    generated = "\n".join(
        [
            f"`quartet bench all --repeat {payload['repeat']}`"
            + (f" `--as-of {payload['as_of']}`" if payload["as_of"] else "")
            + f", {when} UTC, {minutes:.0f} minutes, {span}; medians of {payload['repeat']} "
            f"runs, each ratio to the bare runs alternating with it in the same block (goals: "
            f"dev <= {goals['dev']}x, deployed <= {goals['deployed']}x; ✓ where met). Load "
            f"average at the end: {payload['load']}.",
            "",
            table(payload),
            "",
            "![overhead](img/bench-overhead.png)",
        ]
    )
    write_generated(doc, "overhead", generated, heading=SECTION)


def chart(plt, payload: dict, path: Path) -> Path:
    """Ratio to bare, dev and deployed, against the goals; and what each topology costs at rest."""
    names = list(payload["orchestrators"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    x = range(len(names))
    dev, dep = zip(*(ratios(payload["orchestrators"][n]) for n in names), strict=True)
    for offset, values, label, color in (
        (-0.2, dev, "dev mode", "#dd8452"),
        (0.2, dep, "deployed", "#4c72b0"),
    ):
        heights = [v or 0 for v in values]
        ax1.bar([i + offset for i in x], heights, width=0.4, label=label, color=color)
        for i, v in zip(x, values, strict=True):
            text = f"{v:.2f}x" if v else "failed"
            ax1.annotate(text, (i + offset, v or 0), ha="center", va="bottom", fontsize=7)
    goals = payload["goals"]
    ax1.axhline(1.0, color="grey", linewidth=0.8)
    ax1.axhline(goals["dev"], color="#dd8452", linestyle=":", label=f"dev goal {goals['dev']}x")
    ax1.axhline(
        goals["deployed"],
        color="#4c72b0",
        linestyle=":",
        label=f"deployed goal {goals['deployed']}x",
    )
    ax1.set_xticks(list(x), names)
    ax1.set_ylabel("run time / bare's (medians, same block)")
    span = f"as of {payload['as_of']}" if payload["as_of"] else "full year"
    ax1.set_title(f"What the orchestrator adds ({span})")
    ax1.legend(fontsize=7)
    from lab.bench import idle_panel

    idle_panel(plt, ax2, {n: payload["orchestrators"][n]["deployed"] for n in names})
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(payload["started"]))
    fig.suptitle(f"quartet bench all --repeat {payload['repeat']}  ({when})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
