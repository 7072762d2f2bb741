"""``python -m orchestrators.prefect run|ui|lineage``: Quartet's Prefect entry points.

* ``run [--as-of DATE] [--partition YYYY-MM ...]``: the ``quartet-pipeline`` flow in this process,
  against PREFECT_API_URL when set, else Prefect's ephemeral API (no server to start).
* ``ui [--port 4200]``: ``prefect server start`` on 127.0.0.1 with PREFECT_HOME under
  .quartet/prefect/home, one pipeline run to look at, then ``serve`` of the deployments until
  Ctrl-C.
* ``lineage [--json|--mermaid]``: the graph the flows declare (see lineage.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from core import settings
from orchestrators.prefect import DEFAULT_UI_PORT, configure, home

EXIT_FAILED = 1


def _api_config():
    from core.ingestion import load_config
    from core.source_api import SourceAPIConfig

    config = load_config()
    return SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )


def _run_pipeline(as_of: str | None, partitions: list[str] | None) -> None:
    from core.source_api import running_source_api
    from orchestrators.prefect.deployments import provision
    from orchestrators.prefect.flows import pipeline

    with running_source_api(_api_config()) as (_url, token):
        provision(token)
        pipeline(as_of=as_of, partitions=partitions)


def cmd_run(args: argparse.Namespace) -> int:
    configure()
    started = time.perf_counter()
    try:
        _run_pipeline(args.as_of, args.partition)
    except Exception as exc:  # the flow run failed: its state and logs are in Prefect
        print(f"prefect run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    warehouse = settings.for_pipeline("prefect").warehouse
    print(f"[prefect] done in {time.perf_counter() - started:.1f}s -> {warehouse}", flush=True)
    return 0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_healthy(api_url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {server.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{api_url}/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"prefect server at {api_url} did not answer within {timeout:.0f}s")


@contextlib.contextmanager
def prefect_server(port: int) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1:port (its own process group); yields the API URL."""
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = home() / "server.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "server", "start",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PREFECT_UI_API_URL": api_url},
        )  # fmt: skip
    try:
        _wait_healthy(api_url, server)
        yield api_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the group this function started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def cmd_ui(args: argparse.Namespace) -> int:
    port = args.port or DEFAULT_UI_PORT
    if not _port_free(port):
        print(f"prefect ui: port {port} is taken; pass --port", file=sys.stderr)
        return EXIT_FAILED
    configure()
    # SIGTERM (e.g. from a test or a process manager) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with prefect_server(port) as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        os.environ["PREFECT_UI_URL"] = api_url.removesuffix("/api")
        os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "5")
        from prefect import serve

        from core.source_api import running_source_api
        from orchestrators.prefect.deployments import deployments, provision, watch_source
        from orchestrators.prefect.flows import pipeline

        print(f"Prefect UI: http://127.0.0.1:{port}  (PREFECT_HOME={home()})", flush=True)
        try:
            with running_source_api(_api_config()) as (_url, token):
                provision(token)
                try:
                    pipeline(as_of=args.as_of)
                except Exception as exc:
                    print(f"the first pipeline run failed (see the UI): {exc}", file=sys.stderr)
                watch_source()  # records the watermark that run loaded
                print("serving the deployments; Ctrl-C stops everything", flush=True)
                serve(*deployments())
        except KeyboardInterrupt:
            pass
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    configure()
    from core import lineage
    from orchestrators.prefect.lineage import declared_graph

    fmt = "json" if args.json else "mermaid" if args.mermaid else "text"
    print(lineage.dump(declared_graph(), fmt, title="prefect"))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrators.prefect", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the quartet-pipeline flow end to end")
    run.add_argument("--as-of", help="the source API's clock for this run (YYYY-MM-DD)")
    run.add_argument("--partition", action="append", help="a month YYYY-MM (repeatable)")
    run.set_defaults(func=cmd_run)
    ui = sub.add_parser("ui", help="Prefect server + UI with the deployments served")
    ui.add_argument("--port", type=int, default=None)
    ui.add_argument("--as-of", help="clock of the first run (default: what the API published)")
    ui.set_defaults(func=cmd_ui)
    lin = sub.add_parser("lineage", help="the graph the flows declare")
    group = lin.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--mermaid", action="store_true")
    lin.set_defaults(func=cmd_lineage)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
