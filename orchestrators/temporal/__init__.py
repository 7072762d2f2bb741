"""Quartet on Temporal: the shared dlt + dbt pipeline as a durable workflow.

File roles as in temporalio/samples-python: ``activities.py`` (the work, calling core/),
``workflows.py`` (deterministic orchestration), ``worker.py`` (runs both), ``starter.py`` (starts
workflows, the schedule and the watcher); ``plan.py`` (what the ``plan`` activity returns) and
``levers.py`` (speed levers); the harness around them: ``run.py`` (dev mode, following a run),
``ui.py``, ``lineage.py``, ``deploy.py`` (the server and a worker fleet), ``timeline.py``.
"""

#: workflows and light activities (planning, polling the source, alerts)
TASK_QUEUE = "quartet"
#: activities that write to the DuckDB warehouse (ingestion, dbt): one slot per worker
WAREHOUSE_TASK_QUEUE = "quartet-warehouse"
#: the pipeline name: warehouse/temporal.duckdb, .quartet/temporal/
PIPELINE = "temporal"
#: where a worker finds the server (host:port of the frontend), and the UI for links in alerts
ADDRESS_ENV = "TEMPORAL_ADDRESS"
UI_URL_ENV = "TEMPORAL_UI_URL"
