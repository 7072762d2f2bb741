"""Quartet on Airflow 3: the shared dlt + dbt pipeline as task DAGs (see README.md, ADR 0007).

Names shared by the DAG file, the entrypoint and the tests live here; nothing here imports
Airflow, so the environment can be configured (:mod:`orchestrators.airflow.harness.environment`)
before Airflow reads its configuration.
"""

from pathlib import Path

NAME = "airflow"
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"

#: the DAGs the DAG file declares
PIPELINE_DAG = "quartet_pipeline"  # ingestion then dbt (the full pipeline, monthly)
INGEST_DAG = "quartet_ingest"  # ingestion only
TRANSFORM_DAG = "quartet_transform"  # dbt only
MARTS_DAG = "quartet_marts_published"  # scheduled on the mart Assets (data-aware scheduling)
WATCH_DAG = "quartet_source_watch"  # event trigger: the source API has new data

#: the pool every warehouse writer runs in: one slot on DuckDB (one writer at a time), one per
#: ingestion unit where the warehouse admits parallel writers (environment.writer_pool)
WAREHOUSE_POOL = "quartet_warehouse"
#: the Airflow connection holding the source API's URL and token (its password)
SOURCE_API_CONN = "quartet_source_api"
