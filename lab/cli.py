"""``quartet``: one command line over the bare pipeline and the four orchestrators.

``quartet run|ui|lineage <orchestrator>`` delegates to ``python -m orchestrators.<name> ...`` in
that orchestrator's own environment (``.venvs/<name>``), because Airflow and Prefect cannot share
one (ADR 0002). Everything else runs here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from core import settings
from core.failures import ConfigError
from core.kit import signals

EXIT_FAILED = 1
EXIT_USAGE = 2


def _orchestrator_cmd(name: str, *args: str) -> int:
    python = settings.venv_python(name)
    if not python.exists():
        print(
            f"quartet: the {name} environment is missing ({python}); create it with `make env-{name}`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return signals.call(
        [str(python), "-m", f"orchestrators.{name}", *args], cwd=settings.REPO_ROOT, what=name
    )


def _run_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.as_of:
        flags += ["--as-of", args.as_of]
    for partition in args.partition or []:
        flags += ["--partition", partition]
    if getattr(args, "deployed", False):
        flags.append("--deployed")
    return flags


def _use_warehouse(args: argparse.Namespace) -> int:
    """``--warehouse postgresql://...`` (or ``postgres``: the provider's warehouse_<name> database)
    becomes QUARTET_WAREHOUSE_URL for this run; 0 when fine."""
    from lab import postgres

    if getattr(args, "deployed", False):
        # Deployed services read their settings when `quartet up` starts them, not per run.
        print(
            f"quartet run {args.name}: --warehouse is for dev-mode runs; deployed services "
            "keep the warehouse they were started with",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.warehouse == "postgres":
        try:
            url = postgres.database_url(f"warehouse_{args.name}")
        except postgres.PostgresError as exc:
            print(f"quartet run {args.name}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    elif postgres.is_postgres_url(args.warehouse):
        url = args.warehouse
    else:
        print("quartet run: --warehouse takes postgresql://... or `postgres`", file=sys.stderr)
        return EXIT_USAGE
    os.environ[settings.WAREHOUSE_URL_ENV] = url
    print(f"warehouse: {postgres.mask(url)}", flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "warehouse", None) and (code := _use_warehouse(args)):
        return code
    if args.name == "bare":
        if args.deployed:
            print(
                "quartet run bare: bare has no deployed mode (it is the plain run)", file=sys.stderr
            )
            return EXIT_USAGE
        from core import bare

        return bare.run(args.as_of, args.partition)
    names = settings.PIPELINE_NAMES if args.name == "all" else (args.name,)
    timings: dict[str, dict] = {}
    failed = []
    for name in names:
        print(f"== quartet run {name}", flush=True)
        started = time.perf_counter()
        if name == "bare":
            code = signals.call([sys.executable, "-m", "core", "run", *_run_flags(args)], what=name)
        else:
            code = _orchestrator_cmd(name, "run", *_run_flags(args))
        seconds = time.perf_counter() - started
        timings[name] = {"seconds": round(seconds, 1), "exit_code": code}
        print(f"== {name}: exit {code} in {seconds:.1f}s", flush=True)
        if code:
            failed.append(name)
    if len(names) > 1:
        path = settings.state_dir() / "run-all.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(timings, indent=2))
    if failed:
        print(f"quartet run: failed: {', '.join(failed)}", file=sys.stderr)
        # one pipeline: its own exit code (2 for bad usage, as every entrypoint uses it)
        own = timings[names[0]]["exit_code"]
        return own if len(names) == 1 and own > 0 else EXIT_FAILED
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    flags = ["--port", str(args.port)] if args.port else []
    if args.as_of:
        flags += ["--as-of", args.as_of]
    return _orchestrator_cmd(args.name, "ui", *flags)


def cmd_deployed(args: argparse.Namespace) -> int:
    """``quartet up|down|status <name>``: the orchestrator's deployed-mode services. ``down``
    stops what ``up`` started; the PostgreSQL server is shared (every deployed topology, the
    PostgreSQL warehouses), so it stays, and ``down`` says so."""
    from lab import postgres

    code = _orchestrator_cmd(
        args.name, args.command, *(["--json"] if getattr(args, "json", False) else [])
    )
    if args.command == "down" and postgres.status() is not None:
        print(
            f"[{args.name}] left running: the local PostgreSQL server (shared by the deployed "
            "topologies and the PostgreSQL warehouses); `quartet postgres down` stops it"
        )
    return code


def cmd_postgres(args: argparse.Namespace) -> int:
    """``quartet postgres up|down|url|status``: the local PostgreSQL server (lab/postgres.py)."""
    from lab import postgres

    try:
        if args.action == "up":
            server = postgres.up()
            print(f"PostgreSQL up: {postgres.mask(server.admin_url)}")
            print("  (`quartet postgres url [DATABASE]` prints a URL with its password)")
        elif args.action == "down":
            print("PostgreSQL stopped" if postgres.down() else "PostgreSQL was not running")
        elif args.action == "url":
            print(postgres.database_url(args.database) if args.database else postgres.admin_url())
        else:
            server = postgres.status()
            print(f"running: {postgres.mask(server.admin_url)}" if server else "not running")
            return 0 if server else EXIT_FAILED
    except postgres.PostgresError as exc:
        print(f"quartet postgres {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from core.failures import NotAWarehouseError, WarehouseConnectionError, WarehouseNotFoundError
    from core.warehouse import is_postgres
    from lab.fingerprint import fingerprint

    try:
        fp = fingerprint(args.path if is_postgres(args.path) else Path(args.path))
    except (NotAWarehouseError, WarehouseNotFoundError, WarehouseConnectionError) as exc:
        print(f"quartet fingerprint: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(fp.to_json(), indent=2))
    else:
        print(f"{fp.path}  digest {fp.digest()}")
        for table, tp in sorted(fp.tables.items()):
            print(f"  {table:45s} {tp.rows:>9,} rows  {len(tp.columns):>3} cols  {tp.hash[-16:]}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lab.compare import compare_all

    extra = dict(item.split("=", 1) for item in args.warehouse if "=" in item)
    if len(extra) != len(args.warehouse):
        print("quartet compare: --warehouse takes NAME=postgresql://...", file=sys.stderr)
        return EXIT_USAGE
    report = compare_all(settings.warehouse_dir(), extra=extra)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.identical else EXIT_FAILED


def cmd_lineage(args: argparse.Namespace) -> int:
    fmt = "json" if args.json else "mermaid" if args.mermaid else "text"
    if args.name == "canonical":
        from core import lineage

        print(lineage.dump(lineage.canonical(), fmt, title="canonical"))
        return 0
    return _orchestrator_cmd(args.name, "lineage", *([f"--{fmt}"] if fmt != "text" else []))


def cmd_bench(args: argparse.Namespace) -> int:
    from lab.bench import main as bench_main

    return bench_main(
        args.name, repeat=args.repeat, scale=args.scale, as_of=args.as_of, only=args.only
    )


def cmd_timeline(args: argparse.Namespace) -> int:
    from lab.timeline import main as timeline_main

    names = list(settings.PIPELINE_NAMES) if "all" in args.names else args.names
    return timeline_main(names, as_of=args.as_of, doc=not args.no_doc, reread=args.reread)


def cmd_reliability(args: argparse.Namespace) -> int:
    from lab.reliability import CASES, main

    names = args.only or list(settings.PIPELINE_NAMES)
    cases = args.case or list(CASES)
    out = None if args.no_doc else settings.REPO_ROOT / "docs" / "reliability.md"
    return main(names, cases, out)


def cmd_docs(args: argparse.Namespace) -> int:
    from lab.docs import main as docs_main

    return docs_main()


def cmd_prepare(args: argparse.Namespace) -> int:
    from core import dbt

    print(dbt.prepare_manifest(force=True))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quartet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    # every command that runs or reads a pipeline takes the project file (else QUARTET_PROJECT,
    # else the nycflights example)
    chosen = argparse.ArgumentParser(add_help=False)
    chosen.add_argument(
        "--project",
        metavar="PATH",
        help="the project file (quartet.toml) of the pipeline (default: $QUARTET_PROJECT, "
        "else examples/nycflights/quartet.toml)",
    )

    run = sub.add_parser(
        "run", parents=[chosen], help="run the pipeline end to end (bare, an orchestrator, or all)"
    )
    run.add_argument("name", choices=[*settings.PIPELINE_NAMES, "all"])
    run.add_argument("--as-of", help="the source API's clock for this run (YYYY-MM-DD)")
    run.add_argument("--partition", action="append", help="a month YYYY-MM (repeatable)")
    run.add_argument(
        "--warehouse",
        help="a PostgreSQL warehouse: postgresql://user:pass@host:port/db, or `postgres` for the "
        "provider's warehouse_<name> database (default: warehouse/<name>.duckdb)",
    )
    run.add_argument(
        "--deployed", action="store_true", help="submit to the services `quartet up` started"
    )
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser(
        "ui", parents=[chosen], help="start an orchestrator's own UI with a finished run to look at"
    )
    ui.add_argument("name", choices=settings.ORCHESTRATORS)
    ui.add_argument("--port", type=int)
    ui.add_argument("--as-of", help="clock of the finished run to look at (default: the adapter's)")
    ui.set_defaults(func=cmd_ui)

    # (its flags are the source API's own: main() hands them over before this parser runs)
    sub.add_parser("source-api", help="run the flights source API alone (--help for its flags)")

    for verb, text in (
        ("up", "start an orchestrator's deployed-mode services (returns when all are healthy)"),
        ("down", "stop every deployed-mode service `quartet up` started"),
        ("status", "the deployed-mode services: pid, URL, healthy or not"),
    ):
        deployed = sub.add_parser(verb, parents=[chosen], help=text)
        deployed.add_argument("name", choices=settings.ORCHESTRATORS)
        if verb == "status":
            deployed.add_argument("--json", action="store_true")
        deployed.set_defaults(func=cmd_deployed)

    fp = sub.add_parser("fingerprint", parents=[chosen], help="fingerprint one warehouse file")
    fp.add_argument("path", help="a warehouse/*.duckdb file or a postgresql:// URL")
    fp.add_argument("--json", action="store_true")
    fp.set_defaults(func=cmd_fingerprint)

    cmp = sub.add_parser(
        "compare", parents=[chosen], help="compare every warehouse/*.duckdb against bare"
    )
    cmp.add_argument("--json", action="store_true")
    cmp.add_argument(
        "--warehouse",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="also compare this PostgreSQL warehouse (repeatable); the local server's "
        "warehouse_* databases are found by themselves",
    )
    cmp.set_defaults(func=cmd_compare)

    lin = sub.add_parser(
        "lineage", parents=[chosen], help="the canonical graph, or the one an orchestrator declares"
    )
    lin.add_argument("name", choices=["canonical", *settings.ORCHESTRATORS])
    group = lin.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--mermaid", action="store_true")
    lin.set_defaults(func=cmd_lineage)

    bench = sub.add_parser(
        "bench", parents=[chosen], help="full-year wall time and peak RSS beside bare"
    )
    bench.add_argument(
        "name",
        choices=[
            *settings.PIPELINE_NAMES,
            "all",
            "deployed",
            "reference",
            "source-api",
            "scaling",
            "charts",
        ],
    )
    bench.add_argument("--repeat", type=int, default=3)
    bench.add_argument("--scale", type=int, default=1)
    bench.add_argument("--as-of", help="the API clock (default: the whole configured range)")
    bench.add_argument(
        "--only",
        action="append",
        choices=settings.ORCHESTRATORS,
        help="with all or deployed: this orchestrator (repeatable; default: all four)",
    )
    bench.set_defaults(func=cmd_bench)

    tl = sub.add_parser(
        "timeline",
        parents=[chosen],
        help="one full-year dev-mode run each; when every unit ran, from the orchestrator's "
        "records; charts and docs/benchmarks.md's Timelines (no name: re-render the last)",
    )
    # (no choices=: argparse checks an empty nargs="*" against them; main() names a wrong one)
    tl.add_argument(
        "names", nargs="*", metavar="{" + ",".join(["all", *settings.PIPELINE_NAMES]) + "}"
    )
    tl.add_argument("--as-of", default="2013-12-31")
    tl.add_argument("--no-doc", action="store_true", help="charts only, leave the doc as it is")
    tl.add_argument("--reread", action="store_true", help="read the last runs' records again")
    tl.set_defaults(func=cmd_timeline)

    rel = sub.add_parser(
        "reliability", help="run the reliability matrix; write docs/reliability.md"
    )
    rel.add_argument("--only", action="append", choices=settings.PIPELINE_NAMES)
    rel.add_argument("--case", action="append", help="a case id (repeatable; default: all)")
    rel.add_argument("--no-doc", action="store_true", help="print only, leave the doc as it is")
    rel.set_defaults(func=cmd_reliability)

    docs = sub.add_parser("docs", help="regenerate docs/lineage.md from the lineage commands")
    docs.set_defaults(func=cmd_docs)

    prep = sub.add_parser(
        "prepare", parents=[chosen], help="(re)parse the dbt project into the prepared manifest"
    )
    prep.set_defaults(func=cmd_prepare)

    pg = sub.add_parser("postgres", help="the local PostgreSQL server (up, down, url, status)")
    pg.add_argument("action", choices=["up", "down", "url", "status"])
    pg.add_argument(
        "database", nargs="?", help="with url: this database's URL (created if missing)"
    )
    pg.set_defaults(func=cmd_postgres)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["source-api"]:  # (the token of a dev run, unless one is set)
        from source_api.__main__ import main as source_api_main

        os.environ.setdefault(settings.SOURCE_API_TOKEN_ENV, settings.DEV_API_TOKEN)
        return source_api_main(argv[1:])
    args = parser().parse_args(argv)
    if getattr(args, "project", None):
        from core import project

        chosen = Path(args.project).expanduser().resolve()
        try:
            project.load(chosen)
        except ConfigError as exc:
            print(f"quartet {args.command}: {exc}", file=sys.stderr)
            return 2
        os.environ[project.PROJECT_ENV] = str(chosen)  # this process and every child it starts
    # SIGTERM stops like Ctrl-C: every `with` unwinds, so the source API child stops too
    signals.stop_on_signals()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"quartet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `quartet fingerprint X | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def entrypoint() -> NoReturn:
    """The ``quartet`` command: :func:`main`, then the process ends without the interpreter's
    teardown (``exit_process``: time of a bare run spent freeing what the process is about to
    drop anyway)."""
    signals.exit_process(main())


if __name__ == "__main__":
    entrypoint()
