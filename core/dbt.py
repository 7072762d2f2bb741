"""Running the project's dbt project (transform/ for nycflights) programmatically, and its prepared manifest.

The manifest is prepared once (``dbt parse``) into ``.quartet/dbt-manifest/`` and re-prepared only
when a file of the dbt project changes; the orchestrators read their graphs from it (Dagster's
``@dbt_assets``, Cosmos' ``LoadMode.DBT_MANIFEST``, the canonical lineage). A run builds with
``dbt build`` (models and tests interleaved in DAG order, so a failing test skips what is
downstream of it) into a target dir of its own, seeded with the prepared partial-parse state.

A long-lived process that builds many times (Temporal's worker: one ``dbt build`` per model) can
keep dbt's parsed Manifest between builds (:func:`reusing_manifest`), as dbt documents for
programmatic invocations (``dbtRunner(manifest=...)``): each build then skips loading and checking
the project's files, and writes no JSON artifacts (each would be one model's, overwritten by the
next). One-shot callers build once, parse as before and leave dbt's artifacts in their target.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.failures import ConfigError, DbtBuildError

PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "packages.yml", "dependencies.yml")
#: a project with packages gets ``dbt deps`` before its parse (local packages work offline)
PACKAGE_FILES = ("packages.yml", "dependencies.yml")
PROJECT_DIRS = ("models", "macros", "tests", "seeds", "snapshots", "analyses")


@dataclass
class NodeResult:
    unique_id: str
    name: str
    resource_type: str
    status: str
    seconds: float
    message: str = ""
    rows: int | None = None


@dataclass
class BuildResult:
    nodes: list[NodeResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for n in self.nodes if n.status == status)


def project_fingerprint() -> str:
    """Hash of every file of the dbt project that can change the manifest."""
    digest = hashlib.sha256()
    root = settings.TRANSFORM_DIR
    files = [root / name for name in PROJECT_FILES if (root / name).exists()]
    for folder in PROJECT_DIRS:
        if (root / folder).exists():
            files += sorted(p for p in (root / folder).rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _base_args(target_dir: Path, log_dir: Path) -> list[str]:
    return [
        "--project-dir", str(settings.TRANSFORM_DIR),
        "--profiles-dir", str(settings.PROFILES_DIR),
        "--target-path", str(target_dir),
        "--log-path", str(log_dir),
    ]  # fmt: skip


def _invoke(args: list[str], callbacks: list[Callable] | None = None, manifest=None):
    from dbt.cli.main import dbtRunner  # dbt's import is heavy: only when dbt runs

    os.environ.setdefault(settings.WAREHOUSE_ENV, str(settings.warehouse_dir() / "_parse.duckdb"))
    os.environ.update(
        settings.duckdb_memory_env()
    )  # one profile for parse and build: partial parsing
    return dbtRunner(manifest=manifest, callbacks=callbacks or []).invoke(args)


class _ParsedManifest:
    """dbt's parsed Manifest, kept by a long-lived process between builds.

    It is kept with what it was parsed from: the project's files (their fingerprint), the parse's
    arguments (target dir, vars) and the environment the profile and project read (warehouse,
    dbt target, PostgreSQL settings): a change in any of them parses again. A build compiles its
    nodes into the Manifest (dbt mutates it), so builds that share it run one at a time.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the build using the Manifest
        self.users = 0  # open reusing_manifest() blocks; none: every build parses for itself
        self.users_lock = threading.Lock()  # not the build's: opening a block never waits a build
        self.key: tuple | None = None
        self.manifest = None

    def get(self, parse_args: list[str]):
        """The Manifest for ``parse_args`` here and now, parsed if the kept one does not match;
        None if dbt cannot parse (the build then runs without it and reports why)."""
        key = (
            project_fingerprint(),
            tuple(parse_args),
            tuple(
                sorted((k, v) for k, v in os.environ.items() if k.startswith(("QUARTET_", "DBT_")))
            ),
        )
        if key != self.key:
            self.key, self.manifest = None, None
            result = _invoke(parse_args)
            if result.success and result.result is not None:
                self.key, self.manifest = key, result.result
        return self.manifest

    def drop(self) -> None:
        self.key, self.manifest = None, None


_PARSED = _ParsedManifest()


@contextmanager
def reusing_manifest() -> Iterator[None]:
    """Within the block, :func:`build` reuses one parsed Manifest across builds of this process.

    For a process that builds many times with the project unchanged (a worker); a model edited
    while the block is open is parsed again at the next build, like any project change.
    """
    with _PARSED.users_lock:
        _PARSED.users += 1
    try:
        yield
    finally:
        with _PARSED.users_lock:
            _PARSED.users -= 1
            if not _PARSED.users:
                _PARSED.drop()


def release_warehouse() -> None:
    """Close the DuckDB database dbt-duckdb keeps open for the life of the process.

    Without this, the warehouse stays open in this process after the build: other connections
    with another configuration (read-only readers) fail, and other processes cannot write.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager as manager

    with manager._LOCK:
        if manager._ENV is not None:
            manager._ENV.close()
            manager._ENV = None


def prepare_manifest(force: bool = False) -> Path:
    """Parse the project once into .quartet/dbt-manifest/ (again only when the project changed)."""
    manifest = settings.manifest_path()
    stamp = manifest.with_name("project.sha256")
    current = project_fingerprint()
    if not force and manifest.exists() and stamp.exists() and stamp.read_text() == current:
        return manifest
    target = manifest.parent
    target.mkdir(parents=True, exist_ok=True)
    with open(target.with_name("dbt-manifest.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes may prepare at once
        if not force and manifest.exists() and stamp.exists() and stamp.read_text() == current:
            return manifest
        args = _base_args(target, target / "logs")
        if any((settings.TRANSFORM_DIR / name).exists() for name in PACKAGE_FILES):
            _checked(
                _invoke(["deps", "--quiet", *args[:4], *args[6:]]), "dbt deps"
            )  # local packages
        _checked(_invoke(["parse", "--quiet", *args]), "dbt parse")
        if not manifest.exists():
            raise ConfigError(f"dbt parse of {settings.TRANSFORM_DIR} wrote no manifest")
        stamp.write_text(current)
    return manifest


def _checked(result, what: str) -> None:
    """A failed deps or parse stops the run before anything is ingested, with dbt's message."""
    if not result.success:
        reason = " ".join(str(result.exception or "see dbt's output above").split())
        raise ConfigError(f"{what} of the dbt project {settings.TRANSFORM_DIR} failed: {reason}")


def load_manifest() -> dict:
    return json.loads(prepare_manifest().read_text())


def node_schemas(manifest: dict | None = None) -> list[str]:
    """The schemas the project's models, seeds and snapshots land in, as dbt resolved them."""
    manifest = manifest or load_manifest()
    return sorted(
        {
            node["schema"]
            for node in manifest["nodes"].values()
            if node["resource_type"] in ("model", "seed", "snapshot")
        }
    )


def seed_partial_parse(target_dir: Path) -> None:
    """Start a run's target dir from the prepared parse, so dbt does not parse from scratch."""
    prepared = settings.manifest_path().parent / "partial_parse.msgpack"
    mine = target_dir / "partial_parse.msgpack"
    if prepared.exists() and (not mine.exists() or mine.stat().st_mtime < prepared.stat().st_mtime):
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(prepared, mine)


def warm_up(pipeline: settings.PipelineSettings) -> None:
    """Pay ahead what a process's first :func:`build` pays once: dbt's import, then ``dbt parse``
    into the pipeline's target dir, as the build runs it.

    For a process with nothing else to do meanwhile (the bare run's dbt process, while the
    pipeline ingests): besides the import, dbt's first parse in a process builds the JSON
    schemas it validates the profile and project with and generates the code that reads and
    writes its manifest (CPU paid once per process); the build's own parse then reads the
    partial parse this one wrote. Output goes to dbt's log file only: a project that does not
    parse fails the build, which reports it.
    """
    prepare_manifest()
    seed_partial_parse(pipeline.dbt_target_dir)
    settings.export_dbt_env(pipeline)  # what profiles.yml reads, set where dbt runs
    _invoke(
        ["parse", "--log-level", "none", *_base_args(pipeline.dbt_target_dir, pipeline.dbt_log_dir)]
    )


def build(
    pipeline: settings.PipelineSettings,
    *,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    full_refresh: bool = False,
    extra_vars: dict | None = None,
    on_node: Callable[[NodeResult], None] | None = None,
) -> BuildResult:
    """``dbt build`` into ``pipeline.warehouse``; raises DbtBuildError naming what failed."""
    from dbt.contracts.results import RunStatus, TestStatus

    prepare_manifest()
    seed_partial_parse(pipeline.dbt_target_dir)
    settings.export_dbt_env(pipeline)  # what profiles.yml reads, set where dbt runs
    common = ["--quiet", *_base_args(pipeline.dbt_target_dir, pipeline.dbt_log_dir)]
    if extra_vars:
        common += ["--vars", json.dumps(extra_vars)]
    args = ["build", *common]
    if select:
        args += ["--select", *select]
    if exclude:
        args += ["--exclude", *exclude]
    if full_refresh:
        args.append("--full-refresh")

    nodes: list[NodeResult] = []

    def callback(event) -> None:
        if event.info.name != "NodeFinished":
            return
        try:
            record(event)
        except Exception:  # progress reporting must never break the build
            traceback.print_exc()

    def record(event) -> None:
        info = event.data.run_result
        node = event.data.node_info
        response = info.adapter_response  # a protobuf Struct
        rows = response["rows_affected"] if "rows_affected" in response else None  # noqa: SIM401
        result = NodeResult(
            unique_id=node.unique_id,
            name=node.node_name,
            resource_type=node.resource_type,
            status=info.status,
            seconds=float(info.execution_time or 0.0),
            message=info.message or "",
            rows=int(rows) if isinstance(rows, int | float) else None,
        )
        nodes.append(result)
        if on_node:
            on_node(result)

    started = time.perf_counter()
    try:
        result = _build(args, ["parse", *common], [callback])
    finally:
        release_warehouse()
    build_result = BuildResult(nodes=nodes, seconds=time.perf_counter() - started)
    failed_states = {RunStatus.Error, TestStatus.Fail, TestStatus.Error, RunStatus.Skipped}
    failures = [n for n in nodes if n.status in failed_states]
    if result.exception is not None:
        raise DbtBuildError(f"dbt build could not run: {result.exception}", failures)
    if not result.success or any(n.status != RunStatus.Skipped for n in failures):
        raise DbtBuildError(failure_report(failures), failures)
    return build_result


def _build(args: list[str], parse_args: list[str], callbacks: list[Callable]):
    """dbt build, with the kept Manifest inside a :func:`reusing_manifest` block."""
    if not _PARSED.users:
        return _invoke(args, callbacks)
    with _PARSED.lock:
        # no manifest.json, run_results.json or graph.gpickle per build: the manifest would be the
        # kept one again, and the run results of one model are overwritten by the next model's
        # build (the per-node results reach the caller through the callbacks). Measured: 13
        # one-model builds less CPU (ADR 0009, docs/benchmarks.md)
        result = _invoke([*args, "--no-write-json"], callbacks, manifest=_PARSED.get(parse_args))
        if result.exception is not None:  # dbt stopped part-way: the Manifest may be half-updated
            _PARSED.drop()
        return result


def failure_report(
    failures: Sequence[NodeResult], where: str = "see the dbt logs", *, verb: str = "dbt build"
) -> str:
    """The one wording of a failed dbt build: what broke (with dbt's message), what it skipped.

    Every adapter reports dbt failures through this, whatever its orchestrator hands back
    (dbt's run_results, node events, activity errors).
    """
    skipped_states = {"skipped"}
    broken = [n for n in failures if str(n.status) not in skipped_states]
    skipped = sorted(n.name for n in failures if str(n.status) in skipped_states)
    lines = [f"{n.resource_type} {n.name}: {n.status} - {n.message.strip()}" for n in broken]
    message = f"{verb} failed:\n  " + "\n  ".join(lines or [f"({where})"])
    if skipped:
        message += f"\n  skipped downstream (left as they were): {', '.join(skipped)}"
    return message


def failures_from_run_results(run_results: dict) -> list[NodeResult]:
    """dbt's run_results.json (what dbt-driven integrations hand back) as NodeResults."""
    failed = {"fail", "error", "runtime error", "skipped"}
    return [
        NodeResult(
            unique_id=r["unique_id"],
            name=r["unique_id"].split(".")[2],
            resource_type=r["unique_id"].split(".")[0],
            status=r["status"],
            seconds=float(r.get("execution_time") or 0.0),
            message=r.get("message") or "",
        )
        for r in run_results.get("results", [])
        if r["status"] in failed
    ]
