"""The last dev-mode run's units as Dagster's event log recorded them (``lab/timeline.py``).

``python -m orchestrators.dagster.harness.timeline --home H`` opens the dev-mode instance of the
QUARTET_HOME ``H`` (``.quartet/dagster/home``, SQLite storage that outlives the run) and prints
JSON: the run's start and end (its run record) and one unit per ingestion step and per dbt node.

What each bar is (the JSON says it too, in ``bars``):

* an ingestion unit is its step, ``ingest_<resource>``: from its STEP_START event to its
  STEP_SUCCESS event, as Dagster recorded them;
* the dbt models and tests share one step (``dbt_models``: one ``dbt build``), so a dbt node's
  bar is read from its own event in that step (the model's asset materialization, the test's
  asset check evaluation): from ``dbt/started_at`` to ``dbt/finished_at``, the times dbt
  reported for the node, which the dbt asset adds to the event's metadata (``assets.py``).
  Dagster logs the event when it has read dbt's result, later than dbt finished the node, so
  the event's own timestamp minus dbt's duration would start a child before its parent ended.
  A run recorded before those fields existed falls back to that: the event's timestamp as the
  end, dbt's ``Execution Duration`` before it.
"""

from __future__ import annotations

import json
import sys

from lab.timeline import reader_home

BARS = {
    "ingest": "the step ingest_<resource>: Dagster's STEP_START to STEP_SUCCESS events",
    "dbt": "a dbt model in the step dbt_models: dbt's node_started_at to node_finished_at, as "
    "recorded in the metadata of the model's asset materialization event",
    "test": "a dbt data test in the step dbt_models: dbt's node_started_at to node_finished_at, "
    "as recorded in the metadata of its asset check evaluation event",
}


def _value(metadata, key: str):
    value = metadata.get(key)
    return getattr(value, "value", getattr(value, "text", value))


def _seconds(metadata) -> float:
    return float(_value(metadata, "Execution Duration") or 0.0)


def _epoch(iso: str) -> float:
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _node(name: str, kind: str, logged_at: float, metadata) -> dict:
    from orchestrators.dagster.project import DBT_FINISHED_AT, DBT_STARTED_AT

    started, finished = _value(metadata, DBT_STARTED_AT), _value(metadata, DBT_FINISHED_AT)
    if started and finished:
        return {"unit": name, "kind": kind, "start": _epoch(started), "end": _epoch(finished)}
    return {"unit": name, "kind": kind, "start": logged_at - _seconds(metadata), "end": logged_at}


def units_of(instance, run_id: str) -> list[dict]:
    import dagster as dg

    from core import settings

    step_start: dict[str, float] = {}
    built: set[str] = set()
    checked: set[str] = set()
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
                continue  # a full-range run materializes each asset once per partition
            built.add(key.path[-1])
            units.append(_node(key.path[-1], "dbt", entry.timestamp, materialization.metadata))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if evaluation.check_name in checked:
                continue  # like a materialization, once per partition
            checked.add(evaluation.check_name)
            units.append(_node(evaluation.check_name, "test", entry.timestamp, evaluation.metadata))
    return units


def main(argv: list[str] | None = None) -> int:
    home = reader_home(argv, prog="python -m orchestrators.dagster.harness.timeline")

    import dagster as dg

    from orchestrators.dagster.harness.run import use_dagster_home

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
                    "bars": BARS,
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
