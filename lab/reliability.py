"""The reliability matrix: what bare and each orchestrator do when things go wrong.

Each :class:`Case` breaks one thing on top of a good January warehouse and runs the user's
command (``quartet run <name> ...``) in a process of its own, in a QUARTET_HOME of the matrix.
What a cell records (:class:`Outcome`):

* bad input and faults no retry fixes: a non-zero exit, a message naming the culprit, the
  warehouse fingerprint unchanged, the time to fail;
* crashes (kill -9 of the whole process tree mid-run): no process left, then a plain rerun that
  ends with bare's fingerprint;
* always: the next good run succeeds with bare's fingerprint (nothing is wedged), and the source
  API token appears nowhere in the home (logs, orchestrator homes, metadata databases).

``quartet reliability`` runs the matrix and writes ``docs/reliability.md``; the test suite runs a
subset of the cases for every pipeline (tests/parity/test_reliability.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import settings
from core.kit.service import process_start_time, stop_group
from lab.fingerprint import diff, fingerprint

JANUARY = "2013-01-31"
FEBRUARY = "2013-02-28"


@dataclass
class Context:
    """What a case needs: the pipeline, its home, the healthy API, a fresh API factory."""

    name: str
    home: Path
    api_url: str
    token: str
    start_api: Callable[..., contextlib.AbstractContextManager[tuple[str, str]]]

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse" / f"{self.name}.duckdb"


class CaseNotApplicable(Exception):
    """The machine cannot stage this case (e.g. no right to mount a filesystem)."""


@dataclass
class Case:
    id: str
    title: str
    needle: str  # what the failure message must name
    setup: Callable[[Context, contextlib.ExitStack], tuple[list[str], dict[str, str]]]
    expect_failure: bool = True
    crash: bool = False
    #: for a crash: kill as soon as this holds for the printed lines (else at 35% of a good run)
    kill_when: Callable[[list[str]], bool] | None = None
    #: for a crash: kill at this pause point inside dlt (``RESOURCE:STEP``, core.pipeline's
    #: QUARTET_PAUSE_AT), as soon as the paused process writes its marker
    pause_at: str | None = None
    #: for cases that run more than the one broken command (concurrency): replaces it
    runner: Callable[[Matrix, Case], Outcome] | None = None
    #: a case about orchestrators only (their environments, two of them at once)
    orchestrators_only: bool = False
    #: the runner checks the recovery itself (the generic next good run does not apply)
    own_recovery: bool = False
    #: the tables a failure must leave unchanged (default: all of them)
    kept: Callable[[str], bool] = lambda table: True
    #: the next good run's clock (default: January, the snapshot's). A case whose failed run
    #: may keep part of a later month (an orchestrator's units commit on their own) is followed
    #: by the same command against a healthy source, which must equal bare as of that day
    recover_as_of: str | None = None


@dataclass
class Outcome:
    case: str
    name: str
    ok: bool
    exit_code: int | None
    seconds: float
    message: str
    unchanged: bool | None = None
    recovered: bool | None = None
    token_hits: list[str] = field(default_factory=list)
    applicable: bool = True
    measured: str = ""

    def cell(self) -> str:
        if not self.applicable:
            return "n/a"
        mark = "✓" if self.ok else "✗"
        return f"{mark} {'exit ' + str(self.exit_code) if self.exit_code is not None else 'killed'}, {self.seconds:.0f}s"


def _healthy(ctx: Context, stack: contextlib.ExitStack) -> tuple[list[str], dict[str, str]]:
    return [], {}


def _wrong_token(ctx: Context, stack: contextlib.ExitStack):
    return ["--as-of", FEBRUARY], {settings.SOURCE_API_TOKEN_ENV: "not-the-token"}


def _unreachable(ctx: Context, stack: contextlib.ExitStack):
    return ["--as-of", FEBRUARY], {settings.SOURCE_API_URL_ENV: "http://127.0.0.1:9"}


def _malformed(kind: str):
    def setup(ctx: Context, stack: contextlib.ExitStack):
        url, token = stack.enter_context(ctx.start_api(malformed=(f"flights:{kind}:2013-02-10",)))
        return ["--as-of", FEBRUARY], {
            settings.SOURCE_API_URL_ENV: url,
            settings.SOURCE_API_TOKEN_ENV: token,
        }

    return setup


def _faults_forever(ctx: Context, stack: contextlib.ExitStack):
    """A source that answers every request with HTTP 500 (the source API's own injected faults
    heal after three in a row, so they cannot stand for an outage)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": "internal error (an outage that never heals)"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return ["--as-of", FEBRUARY], {
        settings.SOURCE_API_URL_ENV: f"http://127.0.0.1:{server.server_address[1]}"
    }


def _flags(*flags: str):
    return lambda ctx, stack: (list(flags), {})


def _broken_config(ctx: Context, stack: contextlib.ExitStack):
    path = ctx.home / "broken-ingestion.toml"
    text = settings.INGESTION_CONFIG.read_text().replace("page_size = ", 'page_size = "many" #')
    path.write_text(text)
    return ["--as-of", FEBRUARY], {"QUARTET_INGESTION_CONFIG": str(path)}


def _not_duckdb(ctx: Context, stack: contextlib.ExitStack):
    saved = ctx.warehouse.with_suffix(".saved")
    ctx.warehouse.rename(saved)
    ctx.warehouse.write_bytes(b"this is not a DuckDB file\n" * 100)
    stack.callback(lambda: (ctx.warehouse.unlink(), saved.rename(ctx.warehouse)))
    return ["--as-of", FEBRUARY], {}


def _held(ctx: Context, stack: contextlib.ExitStack):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(ctx.warehouse)!r}); print('ok', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    stack.callback(lambda: (holder.kill(), holder.wait()))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
    return ["--as-of", FEBRUARY], {"QUARTET_LOCK_TIMEOUT": "5"}


def _deleted(ctx: Context, stack: contextlib.ExitStack):
    ctx.warehouse.unlink()
    return ["--as-of", JANUARY], {}


def _full_disk(ctx: Context, stack: contextlib.ExitStack):
    """The warehouse folder on a tmpfs only 1 MiB larger than what it holds (needs the right to
    mount, as root on this machine; elsewhere the case stops with the reason)."""
    folder = ctx.warehouse.parent
    saved = folder.with_name("warehouse.saved")
    folder.rename(saved)
    folder.mkdir()
    used = sum(p.stat().st_size for p in saved.iterdir() if p.is_file())
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={used + (1 << 20)}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )

    def restore() -> None:
        if mount.returncode == 0:
            for path in folder.iterdir():  # what the broken run left, for the fingerprint
                if path.name.startswith(ctx.warehouse.name):  # the file and any WAL
                    shutil.copy2(path, saved / path.name)
            subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()
        saved.rename(folder)

    stack.callback(restore)
    if mount.returncode != 0:
        raise CaseNotApplicable(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    for path in saved.iterdir():
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    return ["--as-of", FEBRUARY], {}


def _disk_full_then_freed(matrix: Matrix, case: Case) -> Outcome:
    """February's run with the warehouse folder full: it fails naming the disk, the marts stay
    as they were (dbt never ran), and the message says which raw tables the load step had
    already committed (dlt commits table by table). Then the disk is freed and the same command
    run again, as a user would: it finishes the pending package and equals bare's February."""
    ctx = matrix.ctx
    before = fingerprint(ctx.warehouse)
    with contextlib.ExitStack() as stack:
        try:
            flags, env = _full_disk(ctx, stack)
        except CaseNotApplicable as why:
            return Outcome(case.id, ctx.name, True, None, 0.0, str(why), applicable=False)
        code, seconds, output = run_command(quartet_argv(ctx.name, flags), {**matrix.env, **env})
    after = fingerprint(ctx.warehouse)
    outcome = Outcome(case.id, ctx.name, False, code, seconds, _last_error_line(output, "space"))
    outcome.unchanged = _marts(before) == _marts(after)
    rerun, _, rerun_output = run_command(quartet_argv(ctx.name, flags), matrix.env)
    differences = diff(matrix.bare_as_of(FEBRUARY), fingerprint(ctx.warehouse))
    outcome.recovered = rerun == 0 and not differences
    if not outcome.recovered:
        said = _last_error_line(rerun_output)
        outcome.message += f" | the same run, disk freed: exit {rerun}: {said} {differences[:2]}"
    named = case.needle in output.lower()
    outcome.ok = code not in (0, None) and named and outcome.unchanged and outcome.recovered
    return outcome


def _silent_api(ctx: Context, stack: contextlib.ExitStack):
    """An API that accepts connections and never answers, with a short request timeout and two
    attempts (the shipped 30 s x 6 would make the case minutes long; the behaviour is the same)."""
    import socket

    listener = stack.enter_context(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)  # connections complete in the backlog; nothing is ever read or answered
    path = ctx.home / "short-timeout.toml"
    text = settings.INGESTION_CONFIG.read_text()
    text = text.replace("request_timeout = 30", "request_timeout = 2")
    text = text.replace("max_attempts = 6", "max_attempts = 2")
    path.write_text(text)
    return ["--as-of", FEBRUARY], {
        settings.SOURCE_API_URL_ENV: f"http://127.0.0.1:{listener.getsockname()[1]}",
        "QUARTET_INGESTION_CONFIG": str(path),
    }


def _missing_env(ctx: Context, stack: contextlib.ExitStack):
    return ["--as-of", FEBRUARY], {"QUARTET_VENVS": str(ctx.home / "no-venvs")}


def _run_together(matrix: Matrix, commands: list[tuple[str, list[str]]]) -> list[tuple]:
    """Several ``quartet run`` commands started at once; their (code, seconds, output)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commands)) as pool:
        futures = [
            pool.submit(run_command, quartet_argv(name, flags), matrix.env)
            for name, flags in commands
        ]
        try:
            return [f.result() for f in futures]
        except BaseException:  # Ctrl-C or SIGTERM reaches this thread: stop the runs, then go
            stop_running()
            raise


def _marts(print_) -> dict:
    return _kept(print_, _is_mart)


def _kept(print_, keep: Callable[[str], bool]) -> dict:
    return {t: v for t, v in print_.tables.items() if keep(t)}


def _is_mart(table: str) -> bool:
    return table.startswith("marts.")


def _flights_and_marts(table: str) -> bool:
    """What a malformed flight record may not change. The orchestrators load one dlt resource
    per unit and each unit commits its own load, so the units that ran before or beside the
    failing one keep the new month (weather, planes); the flights table and every mart must stay
    as they were (ADR 0017). Bare's single load is stricter and passes this too."""
    return table == "raw.flights" or _is_mart(table)


def _bad_value(matrix: Matrix, case: Case) -> Outcome:
    """A value only a dbt test rejects (an unknown origin airport): the run fails naming the
    test, the marts stay as they were, raw keeps what was loaded (nothing is lost), and a rerun
    against the same source fails the same way: the marts wait for the source to correct the
    record. The matrix then puts its snapshot back, so the next good run starts where the case
    did (no good run could pass while raw holds the row, by design)."""
    ctx = matrix.ctx
    before = fingerprint(ctx.warehouse)
    with contextlib.ExitStack() as stack:
        flags, env = _malformed("bad_value")(ctx, stack)
        runs = [run_command(quartet_argv(ctx.name, flags), {**matrix.env, **env}) for _ in "12"]
    after = fingerprint(ctx.warehouse)
    matrix.restore()
    (code, seconds, output), (again, _, again_output) = runs
    outcome = Outcome(
        case.id, ctx.name, False, code, seconds, _last_error_line(output, case.needle)
    )
    outcome.unchanged = _marts(before) == _marts(after)
    kept = after.tables["raw.flights"].rows > before.tables["raw.flights"].rows
    named = all(case.needle in out for out in (output, again_output))
    outcome.ok = code not in (0, None) and again not in (0, None) and named
    outcome.ok = outcome.ok and outcome.unchanged and kept
    return outcome


def _twice_at_once(matrix: Matrix, case: Case) -> Outcome:
    """The same pipeline started twice at once on a deleted warehouse: the second waits for the
    first or fails naming the holder; the warehouse ends as one run leaves it."""
    ctx = matrix.ctx
    ctx.warehouse.unlink()
    results = _run_together(matrix, [(ctx.name, ["--as-of", JANUARY])] * 2)
    codes = [code for code, _, _ in results]
    message = (
        " | ".join(_last_error_line(out, case.needle) for code, _, out in results if code != 0)
        or "both succeeded; the warehouse equals one run's"
    )
    outcome = Outcome(
        case.id, ctx.name, False, max(codes, key=abs), max(s for _, s, _ in results), message
    )
    # case-sensitive: "PID 123" names a holder; a lower-case "pid" is also a metadata DB column
    clear = all(code == 0 or case.needle in out for code, _, out in results)
    outcome.unchanged = ctx.warehouse.exists() and not diff(
        matrix.bare_january, fingerprint(ctx.warehouse)
    )
    outcome.ok = 0 in codes and clear and outcome.unchanged
    return outcome


def _other_at_once(matrix: Matrix, case: Case) -> Outcome:
    """This orchestrator and another one at once, each into its own warehouse: both succeed."""
    ctx = matrix.ctx
    others = [n for n in settings.ORCHESTRATORS if n != ctx.name]
    partner = others[(list(settings.ORCHESTRATORS).index(ctx.name)) % len(others)]
    ctx.warehouse.unlink()
    results = _run_together(
        matrix, [(ctx.name, ["--as-of", JANUARY]), (partner, ["--as-of", JANUARY])]
    )
    codes = [code for code, _, _ in results]
    message = f"with {partner}: " + (
        " | ".join(_last_error_line(out) for code, _, out in results if code != 0)
        or "both succeeded"
    )
    outcome = Outcome(
        case.id, ctx.name, False, max(codes, key=abs), max(s for _, s, _ in results), message
    )
    same = [
        path.exists() and not diff(matrix.bare_january, fingerprint(path))
        for path in (ctx.warehouse, ctx.home / "warehouse" / f"{partner}.duckdb")
    ]
    outcome.unchanged = all(same)
    outcome.ok = codes == [0, 0] and outcome.unchanged
    return outcome


#: a progress line of a dbt model, bare's or an adapter's: ``[NAME] dbt     MODEL   0.4s ...``
#: (core.kit.progress; not the build's summary, ``[NAME] dbt build: ...``)
MODEL_LINE = r"^\[\w+\]\s+dbt\s+(\w+)\s"


def _models_seen(lines: list[str]) -> set[str]:
    import re

    return {m.group(1) for line in lines if (m := re.match(MODEL_LINE, line))}


def _first_model_built(lines: list[str]) -> bool:
    return bool(_models_seen(lines[-1:]))


@functools.cache
def _models() -> frozenset[str]:
    from core import lineage

    return frozenset(n for n, layer in lineage.canonical().nodes.items() if layer != "raw")


def _every_model_built(lines: list[str]) -> bool:
    models = _models()  # first, even for no lines: run_command warms it before the run starts
    return bool(lines and _models_seen(lines[-1:])) and models <= _models_seen(lines)


CASES: dict[str, Case] = {
    c.id: c
    for c in [
        Case("wrong-token", "wrong API token", "token", _wrong_token),
        Case("unreachable-api", "source API unreachable", "127.0.0.1:9", _unreachable),
        Case("malformed-wrong-type", "malformed record: wrong type", "arr_delay", _malformed("wrong_type"),
             kept=_flights_and_marts, recover_as_of=FEBRUARY),
        Case("malformed-missing-key", "malformed record: missing key", "id", _malformed("missing_key"),
             kept=_flights_and_marts, recover_as_of=FEBRUARY),
        Case("malformed-bad-value", "malformed record: bad value (a dbt test fails; marts kept, raw kept)", "origin", _healthy,
             runner=_bad_value),
        Case("faults-forever", "API answers HTTP 500, never heals", "500", _faults_forever),
        Case("bad-partition", "malformed partition", "2013-13", _flags("--partition", "2013-13")),
        Case("partition-out-of-range", "partition outside the range", "2012-12", _flags("--partition", "2012-12")),
        Case("bad-as-of", "bad as-of", "--as-of", _flags("--as-of", "2013-02-30")),
        Case("broken-config", "broken ingestion config", "page_size", _broken_config),
        Case("not-duckdb", "warehouse file is not a DuckDB file", "duckdb", _not_duckdb),
        Case("held-warehouse", "warehouse held by another process", "PID", _held),
        Case("deleted-warehouse", "warehouse deleted, orchestrator state kept", "", _deleted,
             expect_failure=False),
        Case("full-disk", "warehouse folder full (a tmpfs 1 MiB above its content), then freed", "space", _healthy,
             runner=_disk_full_then_freed, own_recovery=True),
        Case("slow-api", "API that never answers (request timeout 2 s, 2 attempts)", "timed out", _silent_api),
        Case("missing-env", "orchestrator environment missing", "make env-", _missing_env,
             orchestrators_only=True),
        Case("twice-at-once", "the same pipeline twice at once (warehouse deleted)", "PID", _healthy,
             runner=_twice_at_once),
        Case("other-at-once", "another orchestrator at the same time (each its warehouse)", "", _healthy,
             runner=_other_at_once, orchestrators_only=True),
        Case("kill-9", "kill -9 of the whole tree during ingestion (35% of a good run), then a plain rerun", "", _deleted,
             crash=True),
        Case("kill-9-extract", "kill -9 inside dlt's extract of flights (its first page extracted), then a plain rerun", "", _flags("--as-of", FEBRUARY),
             crash=True, pause_at="flights:extract", recover_as_of=FEBRUARY),
        Case("kill-9-normalize", "kill -9 inside dlt's normalize of flights (a file normalized, the package not committed), then a plain rerun", "", _flags("--as-of", FEBRUARY),
             crash=True, pause_at="flights:normalize", recover_as_of=FEBRUARY),
        Case("kill-9-load", "kill -9 inside dlt's load of flights (a job loaded, the package not complete), then a plain rerun", "", _flags("--as-of", FEBRUARY),
             crash=True, pause_at="flights:load", recover_as_of=FEBRUARY),
        Case("kill-9-mid-dbt", "kill -9 right after the first dbt model, then a plain rerun", "", _deleted,
             crash=True, kill_when=_first_model_built),
        Case("kill-9-after-dbt", "kill -9 after the last dbt model, before success, then a plain rerun", "", _deleted,
             crash=True, kill_when=_every_model_built),
    ]
}  # fmt: skip

#: the cases the test suite runs for bare (the rest: `quartet reliability`)
SUITE_CASES = (
    "wrong-token",
    "malformed-wrong-type",
    "not-duckdb",
    "full-disk",
    "twice-at-once",
    "kill-9",
)

#: each orchestrator's kill point in the suite: one each (an orchestrator's case costs minutes),
#: rotated so that the four together cover dlt's extract, normalize and load and the dbt build.
#: The earliest point goes to the slowest orchestrator (Airflow), where the kill comes soonest
SUITE_KILL_POINTS = {
    "airflow": "kill-9-extract",
    "dagster": "kill-9-normalize",
    "prefect": "kill-9-load",
    "temporal": "kill-9-mid-dbt",
}


def suite_cases(name: str) -> tuple[str, ...]:
    """The cases the test suite runs for ``name``: bare's six, or for an orchestrator the
    defects users hit (a wrong token, a malformed record) and its kill point, which comes last:
    a crash is always followed by the next good run, which must equal bare."""
    if name == "bare":
        return SUITE_CASES
    return ("wrong-token", "malformed-wrong-type", SUITE_KILL_POINTS[name])


#: process groups of the runs under way (several at once in the concurrency cases): each run is
#: in a group of its own (for kill -9), so a Ctrl-C or SIGTERM to the matrix must stop them
_RUNNING: set[int] = set()


def quartet_argv(name: str, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "lab.cli", "run", name, *flags]


def run_command(
    argv: list[str],
    env: dict[str, str],
    *,
    kill_after: float | None = None,
    kill_when: Callable[[list[str]], bool] | None = None,
    kill_at: Path | None = None,
    timeout: float = 900,
) -> tuple[int | None, float, str]:
    """Run ``argv`` in its own process group; kill -9 its whole tree after ``kill_after``
    seconds, as soon as ``kill_when`` holds for the lines it has printed so far, or as soon as
    the file ``kill_at`` exists (a pause point's marker). The code is None when the kill
    happened, the run's own exit code when it ended first."""
    if kill_when is not None:
        # whatever the check loads once (the lineage) is loaded now: a bare run ends 0.2 s after
        # its last model, and a check still loading then would see the line too late
        kill_when([])
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=settings.REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _RUNNING.add(proc.pid)
    try:
        return _follow(proc, started, kill_after, kill_when, kill_at, timeout)
    except BaseException:  # Ctrl-C or SIGTERM to the matrix, raised in this thread
        stop_group(proc.pid, timeout=10)
        raise
    finally:
        _RUNNING.discard(proc.pid)


def stop_running() -> None:
    """Stop every run under way (their whole process groups)."""
    for group in list(_RUNNING):
        stop_group(group, timeout=10)


def _follow(
    proc: subprocess.Popen,
    started: float,
    kill_after: float | None,
    kill_when: Callable[[list[str]], bool] | None,
    kill_at: Path | None,
    timeout: float,
) -> tuple[int | None, float, str]:
    import threading

    lines: list[str] = []
    reached = threading.Event()

    def watch() -> None:  # the paused process may be a worker whose output nobody relays
        assert kill_at is not None
        while proc.poll() is None and not reached.is_set():
            if kill_at.exists():
                reached.set()
            time.sleep(0.2)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if kill_when is not None and kill_when(lines):
                reached.set()
        reached.set()  # the run ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill_at is not None:
        threading.Thread(target=watch, daemon=True).start()
    reached.wait(kill_after or timeout)
    if proc.poll() is None and reader.is_alive() and (kill_after or kill_when or kill_at):
        tree = process_tree(proc.pid)
        for pid in tree:  # the whole tree at once, as a crash or the OOM killer would
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        reader.join(30)
        stop_group(proc.pid, timeout=10)  # whatever else is left in the group
        survivors = [pid for pid in tree if process_start_time(pid) is not None]
        output = "".join(lines)
        if survivors:
            output += f"\nleft running after kill -9: {survivors}"
        return None, time.monotonic() - started, output
    try:
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        stop_group(proc.pid, timeout=10)
        proc.wait()
        lines.append(f"\nstill running after {timeout:.0f}s: stopped\n")
    reader.join(30)
    return proc.returncode, time.monotonic() - started, "".join(lines)


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (whatever process group they put themselves in)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def token_hits(home: Path, token: str) -> list[str]:
    """Files under ``home`` that contain ``token`` (logs, homes, SQLite/DuckDB metadata)."""
    hits = []
    needle = token.encode()
    for path in home.rglob("*"):
        if path.is_file() and path.stat().st_size < 512 * 1024 * 1024:
            with contextlib.suppress(OSError):
                if needle in path.read_bytes():
                    hits.append(str(path.relative_to(home)))
    return hits


class Matrix:
    """Runs cases for one pipeline in its own home: a good January first, bare's as reference."""

    def __init__(self, name: str, home: Path, api_url: str, token: str, start_api, bare_january):
        self.ctx = Context(name, home, api_url, token, start_api)
        self.bare_january = bare_january
        self.env = {
            "QUARTET_HOME": str(home),
            settings.SOURCE_API_URL_ENV: api_url,
            settings.SOURCE_API_TOKEN_ENV: token,
        }
        self.good_seconds = 0.0
        self.good_output = ""
        self.references: dict[str, object] = {}

    @property
    def saved(self) -> Path:
        return self.ctx.home.with_name(self.ctx.home.name + ".good-january")

    def good_run(self, as_of: str = JANUARY) -> tuple[bool, str]:
        """A run that must equal bare's as of the same day; the first January one's home is
        kept as the snapshot every case starts from (so a case that goes wrong cannot spoil the
        next one)."""
        code, seconds, output = run_command(
            quartet_argv(self.ctx.name, ["--as-of", as_of]), self.env
        )
        self.good_output = output
        self.good_seconds = self.good_seconds or seconds
        if code != 0:
            return False, output[-2000:]
        reference = self.bare_january if as_of == JANUARY else self.bare_as_of(as_of)
        differences = diff(reference, fingerprint(self.ctx.warehouse))
        if not differences and as_of == JANUARY and not self.saved.exists():
            shutil.copytree(self.ctx.home, self.saved, symlinks=True)
        return not differences, "" if not differences else f"differs from bare: {differences[:3]}"

    def settled(self) -> str:
        """What the last good run said it did with what an earlier run left in dlt's working
        folder (core.pipeline.settle_pending), as far as its output shows it."""
        said = [
            line.strip()
            for line in self.good_output.splitlines()
            if "left unfinished" in line or "resetting dlt's state" in line
        ]
        return " / ".join(said)[:400] or "no pending dlt package reported in its output"

    def bare_as_of(self, as_of: str):
        """Bare's fingerprint as of ``as_of`` (one bare run in a home of its own, kept)."""
        if as_of not in self.references:
            home = self.ctx.home.with_name(f"bare-{as_of}")
            env = {**self.env, "QUARTET_HOME": str(home)}
            code, _, output = run_command(quartet_argv("bare", ["--as-of", as_of]), env)
            if code != 0:
                raise RuntimeError(f"bare as of {as_of} failed:\n{output[-2000:]}")
            self.references[as_of] = fingerprint(home / "warehouse" / "bare.duckdb")
        return self.references[as_of]

    def restore(self) -> None:
        """The home as the first good January run left it."""
        shutil.rmtree(self.ctx.home)
        shutil.copytree(self.saved, self.ctx.home, symlinks=True)

    def run(self, case: Case, *, recover: bool = True) -> Outcome:
        """One case; then (``recover``) the next good run, which must give bare's fingerprint;
        then the home goes back to the snapshot for the next case."""
        try:
            return self._run(case, recover=recover)
        finally:
            self.restore()

    def _run(self, case: Case, *, recover: bool) -> Outcome:
        if case.runner is not None:
            return self.recover(case.runner(self, case), recover and not case.own_recovery)
        before = fingerprint(self.ctx.warehouse)
        with contextlib.ExitStack() as stack:
            try:
                flags, env = case.setup(self.ctx, stack)
            except CaseNotApplicable as why:
                return Outcome(case.id, self.ctx.name, True, None, 0.0, str(why), applicable=False)
            pointed = case.kill_when is not None or case.pause_at is not None
            marker = None
            if case.pause_at is not None:
                from core.pipeline import PAUSE_ENV, pause_marker  # dlt: imported when needed

                resource, _, step = case.pause_at.partition(":")
                marker = pause_marker(resource, step, self.ctx.home)
                env = {**env, PAUSE_ENV: case.pause_at}
            code, seconds, output = run_command(
                quartet_argv(self.ctx.name, flags or ["--as-of", JANUARY]),
                {**self.env, **env},
                kill_after=max(3.0, 0.35 * self.good_seconds)
                if case.crash and not pointed
                else None,
                kill_when=case.kill_when,
                kill_at=marker,
            )
        message = _last_error_line(output, case.needle)
        outcome = Outcome(case.id, self.ctx.name, False, code, seconds, message)
        if case.crash:
            # a kill at a point must have happened; the timed one may come after the end
            killed = code is None or (not pointed and code == 0)
            outcome.ok = killed and "left running after kill -9" not in output
            if code is not None and pointed:
                outcome.message = f"the run ended (exit {code}) before the kill point"
            elif marker is not None:
                paused = marker.read_text().strip() if marker.exists() else "?"
                outcome.message = f"killed at {case.pause_at} ({paused})"
        elif case.expect_failure:
            outcome.unchanged = _kept(before, case.kept) == _kept(
                fingerprint(self.ctx.warehouse), case.kept
            )
            named = case.needle.lower() in output.lower()
            outcome.ok = code not in (0, None) and named and outcome.unchanged
        else:
            outcome.ok = code == 0 and not diff(self.bare_january, fingerprint(self.ctx.warehouse))
        return self.recover(outcome, recover or case.crash, case.recover_as_of or JANUARY)

    def recover(self, outcome: Outcome, recover: bool, as_of: str = JANUARY) -> Outcome:
        """The next good run (must give bare's fingerprint), then the token scan of the home."""
        if not recover:
            outcome.token_hits = token_hits(self.ctx.home, self.ctx.token)
            outcome.ok = outcome.ok and not outcome.token_hits
            return outcome
        recovered, why = self.good_run(as_of)
        outcome.recovered = recovered
        if outcome.message.startswith("killed at"):
            outcome.message += f" | the rerun: {self.settled()}"
        if not recovered:
            outcome.ok = False
            outcome.message += f" | next good run: {why[-300:]}"
        outcome.token_hits = token_hits(self.ctx.home, self.ctx.token)
        if outcome.token_hits:
            outcome.ok = False
        return outcome


def _last_error_line(output: str, needle: str = "") -> str:
    """What the run said about its failure: the last line naming the culprit, else the last
    line saying it failed, else its last line."""
    lines = output.strip().splitlines()
    naming = [line for line in lines if needle and needle.lower() in line.lower()]
    failed = [line for line in lines if "fail" in line.lower() or "Error" in line]
    both = [line for line in naming if line in failed]
    return (both or naming or failed or lines or [""])[-1].strip()[:600]


# -- the command: run everything, write docs/reliability.md --------------------------------------


#: a matrix run's temporary homes, and the checkout: machine paths that say nothing to a reader
_MACHINE_PATHS = re.compile(
    r"(/tmp/quartet-reliability-[A-Za-z0-9_]+/[a-z]+|" + re.escape(str(settings.REPO_ROOT)) + r")"
)


def portable(message: str) -> str:
    """A run's message as the page shows it: the case's home as ``<home>``, the checkout as
    ``<repo>``, and only the lines that say something (a library's leak report at a process's
    exit is not the run's failure)."""
    message = _MACHINE_PATHS.sub(
        lambda m: "<repo>" if m.group(0) == str(settings.REPO_ROOT) else "<home>", message
    )
    message = re.sub(r"/tmp/quarte\S*", "<home>...", message)  # cut off mid-path at 600 chars
    for prefix in {sys.base_prefix, sys.prefix}:  # the interpreter that holds a lock, say
        message = message.replace(prefix, "<python>")
    return re.sub(r"See https://nanobind\S*", "", message).strip()


def render(outcomes: list[Outcome], names: list[str]) -> str:
    by = {(o.case, o.name): o for o in outcomes}
    lines = [
        "# Reliability matrix",
        "",
        "What bare and each orchestrator do when things go wrong, side by side. Generated by",
        "`quartet reliability` (lab/reliability.py); `quartet reliability --only NAME --case ID`",
        "re-runs cells and rewrites this page, keeping the others (reliability.json beside it).",
        "",
        "Every case starts from the same good January warehouse and runs the pipeline's user",
        "command (`quartet run NAME`) in a home of its own. A cell is ✓ when:",
        "",
        "- bad input or a fault no retry fixes: a non-zero exit, a message naming the culprit, the",
        "  warehouse fingerprint unchanged. For a malformed flight record: raw.flights and every",
        "  mart unchanged, and the next good run is the same command (as of February) against a",
        "  healthy source, equal to bare as of February: an orchestrator's units that ran beside",
        "  the failing one keep their loads (ADR 0017);",
        "- kill -9 of the whole process tree (of a run rebuilding a deleted warehouse, so that it",
        "  really loads; inside dlt's steps, of a February run): no process left behind, and the",
        "  plain rerun equals bare (as of the same day);",
        "- always: the next good run succeeds with bare's fingerprint (nothing is wedged) and the",
        "  source API token appears nowhere in the home (logs, orchestrator homes, metadata DBs).",
        "",
        "The time is how long the broken run took to end (or until it was killed). `-`: not",
        "measured yet, or not applicable (bare has no orchestrator environment and no other",
        "orchestrator to run beside).",
        "",
        "| case | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for case in CASES.values():
        cells = [by[(case.id, n)].cell() if (case.id, n) in by else "-" for n in names]
        if any(c != "-" for c in cells):
            lines.append(f"| {case.title} (`{case.id}`) | " + " | ".join(cells) + " |")
    lines += ["", "## What each run said", ""]
    for o in sorted(outcomes, key=lambda o: (list(CASES).index(o.case), o.name)):
        mark = "" if o.ok else " **(did not hold)**"
        lines.append(f"- {o.name} / `{o.case}`{mark}: {portable(o.message) or '(no message)'}")
    failures = [o for o in outcomes if not o.ok]
    if failures:
        lines += ["", "## Cells that did not hold, in full", ""]
        lines += [f"- {o.name} / `{o.case}`: `{portable(str(asdict(o)))}`" for o in failures]
    measured = sorted({o.measured for o in outcomes if o.measured})
    lines += [
        "",
        "## Notes",
        "",
        "- The test suite (tests/parity/test_reliability.py, one test per pipeline) runs "
        + ", ".join(f"`{c}`" for c in SUITE_CASES)
        + " for bare, and for each orchestrator `wrong-token`, `malformed-wrong-type` and one",
        "  kill point: " + ", ".join(f"{n} `{c}`" for n, c in SUITE_KILL_POINTS.items()) + ";",
        "  the rest run here (every case for every pipeline is longer than the suite's budget).",
        "- Kill points: during ingestion (35% of the pipeline's good January run); inside dlt's",
        "  extract, normalize and load of flights in a February run on the January warehouse, at a",
        "  pause point of core/pipeline.py (`QUARTET_PAUSE_AT=flights:STEP`: the process writes a",
        "  marker and sleeps, the matrix kills the tree; the rerun, as of February, must equal bare",
        "  as of February: no duplicate, no lost row); right after the first dbt model's progress",
        "  line; and after the last model's, before the run reports success.",
        "- The full disk is a tmpfs mounted on the warehouse folder, 1 MiB larger than its content",
        "  (root may mount here; where a process may not, the cell says `n/a` and why).",
        "- A bad value that only a dbt test rejects keeps its row in raw and blocks the marts until",
        "  the source corrects it, by design: the case checks that a rerun fails the same way.",
    ]
    if measured:
        lines.append(f"- Measured between {measured[0]} and {measured[-1]} (2 cores, shared).")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _api_factory() -> Iterator[Callable]:
    from core.source_service import SourceAPIConfig, running_source_api

    @contextlib.contextmanager
    def start(**config):
        saved = os.environ.pop(settings.SOURCE_API_URL_ENV, None)
        try:
            with running_source_api(SourceAPIConfig(**config)) as api:
                yield api
        finally:
            if saved is not None:
                os.environ[settings.SOURCE_API_URL_ENV] = saved

    yield start


def main(names: list[str], cases: list[str], out: Path | None) -> int:
    """Run ``cases`` for ``names``; with ``out``, merge the cells into ``out``'s JSON twin (the
    cells not re-run keep their last result) and rewrite the page after every cell."""
    try:
        return _main(names, cases, out)
    except KeyboardInterrupt:
        stop_running()
        print("quartet reliability: interrupted; stopped the runs under way", file=sys.stderr)
        return 130


def _main(names: list[str], cases: list[str], out: Path | None) -> int:
    import tempfile

    from core.source_service import running_source_api

    results = out.with_suffix(".json") if out is not None else None
    outcomes: list[Outcome] = []
    with (
        tempfile.TemporaryDirectory(prefix="quartet-reliability-") as tmp,
        running_source_api() as (url, token),
        _api_factory() as start_api,
    ):
        bare_home = Path(tmp) / "reference"
        code, _, output = run_command(
            quartet_argv("bare", ["--as-of", JANUARY]), {"QUARTET_HOME": str(bare_home)}
        )
        if code != 0:
            print(output, file=sys.stderr)
            return 1
        bare = fingerprint(bare_home / "warehouse" / "bare.duckdb")
        for name in names:
            matrix = Matrix(name, Path(tmp) / name, url, token, start_api, bare)
            ok, why = matrix.good_run()
            if not ok:
                print(f"{name}: the good January run failed: {why}", file=sys.stderr)
                return 1
            for case_id in cases:
                if name == "bare" and CASES[case_id].orchestrators_only:
                    continue
                outcome = matrix.run(CASES[case_id])
                outcome.measured = _when()
                outcomes.append(outcome)
                print(
                    f"{name:9s} {case_id:24s} {outcome.cell():22s} {outcome.message[:90]}",
                    flush=True,
                )
                if results is not None and out is not None:
                    record(outcome, results, out)
    if out is not None:
        print(f"wrote {out} and {results}")
    return 0 if all(o.ok for o in outcomes) else 1


def record(outcome: Outcome, results: Path, page: Path) -> None:
    """Merge one cell into ``results`` and rewrite ``page`` from all cells; several matrix
    processes (one per pipeline) may do it at once, so under an exclusive lock."""
    import fcntl

    with open(results.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = {}
        if results.exists():
            known = {(o["case"], o["name"]): Outcome(**o) for o in json.loads(results.read_text())}
        outcome.message = portable(outcome.message)  # the JSON is a doc too: no machine paths
        known[(outcome.case, outcome.name)] = outcome
        cells = sorted(known.values(), key=lambda o: (o.name, o.case))
        results.write_text(json.dumps([asdict(o) for o in cells], indent=2) + "\n")
        shown = [n for n in settings.PIPELINE_NAMES if any(o.name == n for o in cells)]
        page.write_text(render(cells, shown))


def _when() -> str:
    """When a cell was measured, with the machine's load then (figures depend on it)."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}, load {os.getloadavg()[0]:.1f}"
