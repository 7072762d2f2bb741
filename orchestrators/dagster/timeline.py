"""The last dev-mode run's units as Dagster's event log recorded them (``core/timeline.py``).

``python -m orchestrators.dagster.timeline --home H`` opens the dev-mode instance of the
QUARTET_HOME ``H`` (``.quartet/dagster/home``, SQLite storage that outlives the run) and prints
JSON: the run's start and end (its run record) and one unit per ingestion step (STEP_START to
STEP_SUCCESS) and per dbt node. The dbt models and tests share one step (``dbt_models``: one
``dbt build``), so each node is read from its own event: the asset materialization or check
evaluation is logged when dbt reports the node finished, with dbt's ``Execution Duration``.
"""

from __future__ import annotations

import json
import sys

from core.timeline import reader_home


def _seconds(metadata) -> float:
    duration = metadata.get("Execution Duration")
    return float(getattr(duration, "value", duration) or 0.0)


def units_of(instance, run_id: str) -> list[dict]:
    import dagster as dg

    from core import settings

    step_start: dict[str, float] = {}
    built: set[str] = set()
    units = []
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            step_start[event.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS and event.step_key.startswith("ingest_"):
            units.append(
                {
                    "unit": event.step_key.removeprefix("ingest_"),
                    "kind": "ingest",
                    "start": step_start[event.step_key],
                    "end": entry.timestamp,
                }
            )
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key
            if key.path[0] == settings.RAW_SCHEMA:
                continue  # an ingestion asset: its step is the unit
            if key.path[-1] in built:
                continue  # a full-range run materializes each asset once per month partition
            built.add(key.path[-1])
            seconds = _seconds(materialization.metadata)
            units.append(_node(key.path[-1], "dbt", entry.timestamp, seconds))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            seconds = _seconds(evaluation.metadata)
            units.append(_node(evaluation.check_name, "test", entry.timestamp, seconds))
    return units


def _node(name: str, kind: str, end: float, seconds: float) -> dict:
    return {"unit": name, "kind": kind, "start": end - seconds, "end": end}


def main(argv: list[str] | None = None) -> int:
    home = reader_home(argv, prog="python -m orchestrators.dagster.timeline")

    import dagster as dg

    from orchestrators.dagster.project import use_dagster_home

    use_dagster_home()
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(limit=1)  # newest first
        if not records:
            raise SystemExit(f"no Dagster run in {home}")
        record = records[0]
        run_id = record.dagster_run.run_id
        print(
            json.dumps(
                {
                    "source": "Dagster's event log (dev-mode instance, SQLite)",
                    "id": run_id,
                    "status": record.dagster_run.status.value,
                    "start": record.start_time,
                    "end": record.end_time,
                    "units": units_of(instance, run_id),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
