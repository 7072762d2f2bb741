"""``ui``: api-server, scheduler and dag-processor as separate processes on 127.0.0.1.

Not ``airflow standalone`` (it leaves workers behind on SIGTERM, TRAPS.md). Before the services
start, a finished run is recorded with ``dag.test()`` when the metadata DB has none, so there is
something to look at. Ctrl-C (or SIGTERM) stops every process this command started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.net import free_port
from core.source_api import running_source_api
from orchestrators.airflow import PIPELINE_DAG, environment

USER = "admin"
SERVICES = ("dag-processor", "scheduler", "api-server")


def _secret(home: Path, name: str) -> str:
    path = home / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text()


def service_env(port: int) -> dict[str, str]:
    """The settings api-server, scheduler and dag-processor must agree on (TRAPS.md)."""
    home = environment.airflow_home()
    passwords = home / "simple_auth_manager_passwords.json"
    if not passwords.exists():
        passwords.write_text(json.dumps({USER: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    url = f"http://127.0.0.1:{port}"
    return {
        **os.environ,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": _secret(home, "api_secret_key"),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def password() -> str:
    path = environment.airflow_home() / "simple_auth_manager_passwords.json"
    return json.loads(path.read_text())[USER]


def has_finished_run() -> bool:
    from airflow.models.dagrun import DagRun

    return bool(DagRun.find(dag_id=PIPELINE_DAG, state="success"))


def wait_healthy(url: str, procs: list[subprocess.Popen], timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each service's process group (its workers included), SIGKILL what lingers."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve(port: int = 8080, as_of: str | None = "2013-01-31") -> int:
    from orchestrators.airflow.runner import load_dag, run_once

    environment.migrate()
    port = free_port(port)
    url = f"http://127.0.0.1:{port}"
    env = service_env(port)
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    with running_source_api() as (api_url, token):
        environment.source_api_connection(api_url, token)
        env["AIRFLOW_CONN_QUARTET_SOURCE_API"] = os.environ["AIRFLOW_CONN_QUARTET_SOURCE_API"]
        if not has_finished_run():
            print(f"recording a finished run to look at (as of {as_of})...", flush=True)
            run_once(load_dag(), as_of=as_of)
        procs = []
        logs = environment.airflow_home() / "logs" / "services"
        logs.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            log = open(logs / f"{service}.log", "ab")  # noqa: SIM115 - lives as long as the service
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "airflow", service],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
            )
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            if not wait_healthy(url, procs):
                print(f"the Airflow services did not come up; see {logs}", file=sys.stderr)
                return 1
            print(
                f"Airflow UI: {url}  (user {USER}, password {password()})\n"
                f"  DAG: {url}/dags/{PIPELINE_DAG}   Assets: {url}/assets\n"
                f"  service logs: {logs}\nCtrl-C to stop.",
                flush=True,
            )
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.5)
        finally:
            stop(procs)
            print("stopped dag-processor, scheduler and api-server", flush=True)
    return 0
