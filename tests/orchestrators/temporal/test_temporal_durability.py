"""Durable execution: SIGKILL the worker mid-ingestion and mid-dbt; the same workflow completes.

The worker runs in its own process (``python -m orchestrators.temporal.worker``). The test waits
until the server reports an ingestion activity running, kills the worker with SIGKILL (no
cleanup of any kind), starts a new one, then does the same during dbt. The activity the dead
worker held times out on its heartbeat and runs again on the new worker; the workflow resumes
from its history. The warehouse must be exactly the bare one: nothing duplicated, nothing lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys

from temporal_helpers import activity_runs
from temporalio.api.enums.v1 import PendingActivityState

from core import settings
from orchestrators.temporal.harness.run import connect
from orchestrators.temporal.starter import placement, start
from orchestrators.temporal.workflows import PipelineInput
from tests.helpers import JANUARY, assert_same_as_bare, expected


def short_heartbeat() -> dict:
    """The configured placement with a 15 s heartbeat timeout: a killed worker is noticed soon."""
    inputs = placement()
    return {**inputs, "policy": dataclasses.replace(inputs["policy"], heartbeat_seconds=15)}


def start_worker(server, api, log_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": server.address,
        settings.SOURCE_API_URL_ENV: api.url,
        settings.SOURCE_API_TOKEN_ENV: api.token,
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrators.temporal.worker"],
            env=env,
            cwd=settings.REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def running_activity(handle, activity_type: str, timeout: float = 300) -> str:
    """Wait until the server reports an activity of this type started; its worker's identity."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if (
                pending.activity_type.name == activity_type
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            ):
                return pending.last_worker_identity
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no {activity_type} activity started within {timeout:.0f}s")


def test_sigkill_of_the_worker_mid_ingestion_and_mid_dbt_loses_nothing(
    temporal_server, source_api, bare_january, fresh_home, tmp_path
) -> None:
    workers: list[subprocess.Popen] = []

    async def main():
        client = await connect(temporal_server.address)
        # a heartbeat timeout shorter than the configured one: the lost activity is noticed sooner
        handle = await start(client, PipelineInput(as_of=JANUARY, **short_heartbeat()))
        killed = []
        try:
            for phase in ("ingest_resource", "build_model"):
                workers.append(start_worker(temporal_server, source_api, tmp_path / "worker.log"))
                killed.append((phase, await running_activity(handle, phase)))
                workers[-1].send_signal(signal.SIGKILL)
                assert workers[-1].wait(timeout=30) == -signal.SIGKILL
            workers.append(start_worker(temporal_server, source_api, tmp_path / "worker.log"))
            result = await handle.result()
        finally:
            for worker in workers:
                if worker.poll() is None:  # a worker's graceful shutdown waits for its
                    worker.terminate()  # long polls; past 20 s it is stopped as `down` does
                    try:
                        worker.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait()
        return killed, result, await activity_runs(handle)

    killed, result, runs = asyncio.run(main())
    # each phase had an activity running on the killed worker, which ran again elsewhere
    for phase, identity in killed:
        assert identity.startswith(f"{workers[0].pid}@") or identity.startswith(
            f"{workers[1].pid}@"
        ), identity
        retried = [r for r in runs if r["type"] == phase and r["attempt"] > 1]
        assert retried, f"no {phase} activity was retried after the SIGKILL"
    assert all(r["identity"].startswith(f"{workers[2].pid}@") for r in runs[-3:])
    assert {i.resource for i in result.ingested} == set(expected().resources)
    assert len(result.built) == len(expected().models)
    assert_same_as_bare(settings.for_pipeline("temporal").warehouse, bare_january)
