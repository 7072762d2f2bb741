"""The last dev-mode run's units as Prefect's database recorded them (``lab/timeline.py``).

A dev-mode run talks to Prefect's ephemeral API: a server process started for the run and stopped
with it. The server goes, its records stay: they are in the SQLite database under PREFECT_HOME
(``.quartet/prefect/home/prefect.db``). ``python -m orchestrators.prefect.harness.timeline --home H``
reads them with Prefect's own server models (no server is started) and prints JSON: the newest
``quartet-pipeline`` flow run's start and end, and one unit per task run inside it (``ingest
<resource>``, then ``model <name>`` / ``test <name>`` from prefect-dbt), with its start_time and
end_time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from lab.timeline import reader_home

PIPELINE_FLOW = "quartet-pipeline"
#: task run names: ``ingest flights`` (flows.ingest_task), ``model x`` / ``test y`` (prefect-dbt)
KINDS = {"ingest": "ingest", "model": "dbt", "test": "test"}


async def read() -> dict:
    from prefect.server import models, schemas
    from prefect.server.database import provide_database_interface

    db = provide_database_interface()
    async with db.session_context() as session:
        flow_runs = await models.flow_runs.read_flow_runs(
            session=session,
            flow_filter=schemas.filters.FlowFilter(
                name=schemas.filters.FlowFilterName(any_=[PIPELINE_FLOW])
            ),
            sort=schemas.sorting.FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        if not flow_runs:
            raise SystemExit(f"no {PIPELINE_FLOW} flow run in {os.environ['PREFECT_HOME']}")
        run = flow_runs[0]
        # the pipeline's task runs are in its subflows (ingestion, transformation): every task
        # run of the pipeline run's time span (a fresh home holds that one run)
        task_runs = await models.task_runs.read_task_runs(
            session=session,
            task_run_filter=schemas.filters.TaskRunFilter(
                start_time=schemas.filters.TaskRunFilterStartTime(
                    after_=run.start_time, before_=run.end_time
                )
            ),
        )
        units = []
        for task_run in task_runs:
            kind, _, unit = task_run.name.partition(" ")
            if kind not in KINDS or task_run.start_time is None or task_run.end_time is None:
                continue  # a subflow's own task run (its wrapper), or one that never ran
            units.append(
                {
                    "unit": unit,
                    "kind": KINDS[kind],
                    "start": task_run.start_time.timestamp(),
                    "end": task_run.end_time.timestamp(),
                    "state": task_run.state_type.value if task_run.state_type else None,
                }
            )
        return {
            "source": "Prefect's task runs (the ephemeral API's SQLite database, read after it "
            "stopped)",
            "id": str(run.id),
            "status": run.state_type.value if run.state_type else None,
            "start": run.start_time.timestamp(),
            "end": run.end_time.timestamp(),
            "units": units,
        }


def main(argv: list[str] | None = None) -> int:
    reader_home(argv, prog="python -m orchestrators.prefect.harness.timeline")

    from orchestrators.prefect import configure

    configure()  # PREFECT_HOME of that QUARTET_HOME, before Prefect reads its settings
    print(json.dumps(asyncio.run(read())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
