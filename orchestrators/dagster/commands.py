"""What ``python -m orchestrators.dagster run|ui|lineage`` does.

``run`` executes the ``full_pipeline`` job in process against the persistent instance under
``.quartet/dagster/home`` (no webserver, no daemon), so ``ui`` later shows its runs. Without
``--partition`` a run covers the whole partition range (a single-run backfill); each
``--partition`` is a run of its own, in the order given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from core import settings
from core.ingestion import ConfigError, parse_date
from core.net import free_port
from core.source_api import SourceAPIConfig, running_source_api

DEFAULT_PORT = 3000
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _api_config() -> SourceAPIConfig:
    from orchestrators.dagster.project import CONFIG

    return SourceAPIConfig(
        scale=CONFIG.scale, fault_rate=CONFIG.fault_rate, fault_seed=CONFIG.fault_seed
    )


def execute(
    *,
    as_of: str | None = None,
    partition: str | None = None,
    job_name: str = "full_pipeline",
    run_config: dict | None = None,
):
    """One in-process run of ``job_name`` on the persistent instance; returns its result.

    Expects the source API's URL and token in SOURCE_API_URL / SOURCE_API_TOKEN (the resources
    read them through EnvVar). A failed run is alerted the way the daemon would: by evaluating
    the ``alert_on_run_failure`` sensor for it.
    """
    import dagster as dg

    from orchestrators.dagster.automation import as_of_config
    from orchestrators.dagster.definitions import defs
    from orchestrators.dagster.project import MONTHLY, use_dagster_home

    use_dagster_home()
    job = defs.resolve_job_def(job_name)
    keys = MONTHLY.get_partition_keys()
    tags = {} if partition else dict(zip(RANGE_TAGS, (keys[0], keys[-1]), strict=True))
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition,
            tags=tags,
            run_config=run_config or as_of_config(as_of),
            raise_on_error=False,  # a failure is reported and alerted below, then exits 1
        )
        if not result.success:
            alert(instance, result.run_id)
    return result


def alert(instance, run_id: str) -> None:
    """Evaluate the run-failure sensor for a finished run (what the daemon does under ``ui``)."""
    import dagster as dg

    from orchestrators.dagster.automation import alert_on_run_failure

    run = instance.get_run_by_id(run_id)
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    if not records:
        return
    context = dg.build_run_status_sensor_context(
        sensor_name=alert_on_run_failure.name,
        dagster_event=records[-1].event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    alert_on_run_failure(context)


def failure_summary(result) -> str:
    lines = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            lines.append(f"{event.step_key}: {event.step_failure_data.error.message.strip()}")
    return "\n".join(lines) or "the run failed (see the Dagster UI)"


def run(as_of: str | None = None, partitions: Sequence[str] = ()) -> int:
    try:
        if as_of:
            as_of = parse_date("--as-of", as_of)
        from orchestrators.dagster.project import MONTHLY

        unknown = [p for p in partitions if p not in MONTHLY.get_partition_keys()]
        if unknown:
            raise ConfigError(f"unknown partitions {unknown}: months YYYY-MM of the range")
    except ConfigError as exc:
        print(f"dagster run: {exc}", file=sys.stderr)
        return 2
    with running_source_api(_api_config()) as (_url, token):
        os.environ.setdefault(settings.SOURCE_API_TOKEN_ENV, token)
        for partition in partitions or [None]:
            result = execute(as_of=as_of, partition=partition)
            label = f"partition {partition}" if partition else "all partitions"
            if not result.success:
                print(
                    f"dagster run {result.run_id} ({label}) failed:\n{failure_summary(result)}",
                    file=sys.stderr,
                )
                return 1
            print(f"[dagster] run {result.run_id} ({label}) succeeded", flush=True)
    print(f"[dagster] warehouse: {settings.for_pipeline('dagster').warehouse}", flush=True)
    return 0


def ui(port: int | None = None, as_of: str = "2013-01-31") -> int:
    """``dagster dev`` on 127.0.0.1 with the pipeline loaded and at least one finished run."""
    import dagster as dg

    from orchestrators.dagster.project import use_dagster_home

    home = use_dagster_home()
    port = free_port(port or DEFAULT_PORT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop what we started, then exit
    with running_source_api(_api_config()) as (_url, token):
        os.environ.setdefault(settings.SOURCE_API_TOKEN_ENV, token)
        with dg.DagsterInstance.get() as instance:
            has_run = bool(instance.get_runs(limit=1))
        if not has_run:
            print(f"[dagster] no run yet: running as of {as_of} first, to have one to look at")
            execute(as_of=as_of)
        os.environ["QUARTET_DAGSTER_URL"] = f"http://127.0.0.1:{port}"
        command = [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-m",
            "orchestrators.dagster.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        print(f"[dagster] DAGSTER_HOME={home}\n[dagster] UI: http://127.0.0.1:{port}", flush=True)
        proc = subprocess.Popen(command, cwd=settings.REPO_ROOT, start_new_session=True)
        try:
            return proc.wait()
        except (KeyboardInterrupt, SystemExit):
            return 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # dagster dev stops its children on SIGINT
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def lineage(fmt: str = "text") -> int:
    from core import lineage as core_lineage
    from orchestrators.dagster.definitions import defs
    from orchestrators.dagster.lineage import declared_graph

    print(core_lineage.dump(declared_graph(defs), fmt, title="dagster asset graph"))
    return 0
