"""The pipeline as software-defined assets: one dlt asset per source resource, one per dbt model.

* ``raw/<table>``: ``@dlt_assets`` (dagster-dlt) over the shared rest_api source of core/, one op
  per resource so that each retries and shows on its own. The translator keys them the way
  dagster-dbt keys the dbt sources (``source('raw', 'flights')`` -> ``raw/flights``), which joins
  both into one lineage graph.
* dbt models: ``@dbt_assets`` (dagster-dbt) over the prepared manifest, grouped by layer; dbt
  tests are asset checks (source tests included) and ``dbt build`` skips what is downstream of
  a failing one.
* Every op that writes claims the ``quartet_warehouse`` pool (limit 1) and core's writer lock.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource
from dagster_dbt import dbt_assets as dbt_assets_decorator
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from dagster_duckdb import DuckDBResource

from core import dbt as dbt_project
from core import settings
from core.ingestion import window
from core.pipeline import dlt_pipeline
from core.source import flights_source
from core.warehouse import writer_lock
from orchestrators.dagster.project import CONFIG, MONTHLY, PIPELINE, WAREHOUSE_POOL, run_windows
from orchestrators.dagster.resources import ApiClock, SourceAPI

#: placeholders for the definition-time source (only its resources and schema are read then)
_DECLARED_URL, _DECLARED_TOKEN = "http://source-api.invalid", "supplied-at-run-time"


class RawTables(DagsterDltTranslator):
    """dlt resource ``flights`` -> asset ``raw/flights`` in group ``raw``: the key dbt uses."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        return (
            super()
            .get_asset_spec(data)
            .replace_attributes(
                key=dg.AssetKey([settings.RAW_SCHEMA, data.resource.name]),
                deps=[],  # the API itself is not an asset here
                group_name=settings.RAW_SCHEMA,
            )
        )


def _ingestion_assets(resource: str) -> dg.AssetsDefinition:
    @dlt_assets(
        dlt_source=flights_source(
            CONFIG,
            window(CONFIG, resources=(resource,)),
            base_url=_DECLARED_URL,
            token=_DECLARED_TOKEN,
        ),
        dlt_pipeline=dlt_pipeline(PIPELINE),
        name=f"ingest_{resource}",
        dagster_dlt_translator=RawTables(),
        partitions_def=MONTHLY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
    )
    def _assets(
        context: dg.AssetExecutionContext,
        dlt: DagsterDltResource,
        source_api: SourceAPI,
        api_clock: ApiClock,
        warehouse: DuckDBResource,
    ) -> Iterator[Any]:
        os.environ.update(CONFIG.runtime_env())  # dlt's HTTP retries and workers (ingestion.toml)
        results: list[Any] = []
        for run_window in run_windows(context, (resource,), api_clock.as_of):
            source = flights_source(
                CONFIG, run_window, base_url=source_api.url, token=source_api.token
            )
            with writer_lock(Path(warehouse.database), purpose=f"dagster ingest {resource}"):
                results = list(
                    dlt.run(
                        context=context,
                        dlt_source=source,
                        loader_file_format=CONFIG.loader_file_format,
                    )
                )
            context.log.info(
                f"loaded {resource} for {run_window.partition or 'all months'}"
                f" as of {run_window.as_of or 'latest'}"
            )
        with warehouse.get_connection() as con:  # the table as it stands after the load
            rows = con.execute(f"select count(*) from {settings.RAW_SCHEMA}.{resource}").fetchone()
        for result in results:  # one materialization per asset, after the last window
            yield dg.MaterializeResult(
                asset_key=result.asset_key,
                metadata={**result.metadata, "dagster/row_count": rows[0]},
            )

    return _assets


ingestion_assets = [_ingestion_assets(resource) for resource in CONFIG.resources]


class DbtLayers(DagsterDbtTranslator):
    """dbt models grouped by layer (their schema: staging, intermediate, marts)."""

    def get_asset_spec(self, manifest, unique_id, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id)
        if node and node["resource_type"] == "model":
            spec = spec.replace_attributes(group_name=node["config"].get("schema") or "main")
        return spec


DBT_TRANSLATOR = DbtLayers(
    settings=DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True)
)


@dbt_assets_decorator(
    manifest=dbt_project.prepare_manifest(),
    dagster_dbt_translator=DBT_TRANSLATOR,
    partitions_def=MONTHLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: DuckDBResource
) -> Iterator[Any]:
    # models and tests in DAG order: a failing test skips (blocks) what is downstream of it;
    # incremental models pick up whatever months the raw layer has gained since the last build
    target = PIPELINE.dbt_target_dir
    dbt_project._seed_partial_parse(target)  # start from the prepared parse, not from scratch
    with writer_lock(Path(warehouse.database), purpose="dagster dbt build"):
        # raise_on_error=False only to re-raise below with the failing tests named
        invocation = dbt.cli(["build"], context=context, target_path=target, raise_on_error=False)
        yield from invocation.stream()
    if not invocation.is_successful():
        # a failing dbt test is a fact about the data, not a transient error: never retried
        raise dg.Failure(
            description=_build_failure(invocation.get_artifact("run_results.json")),
            allow_retries=False,
        )


def _build_failure(run_results: dict) -> str:
    """What a failed ``dbt build`` broke and what it left alone (core's DbtBuildError wording)."""
    results = run_results.get("results", [])
    broken = [r for r in results if r["status"] in ("fail", "error", "runtime error")]
    skipped = sorted(r["unique_id"].split(".")[2] for r in results if r["status"] == "skipped")
    lines = [
        f"{r['unique_id'].split('.')[0]} {r['unique_id'].split('.')[2]}: {r['status']}"
        f" - {(r.get('message') or '').strip()}"
        for r in broken
    ]
    message = "dbt build failed:\n  " + "\n  ".join(lines or ["(see the dbt logs of this step)"])
    if skipped:
        message += f"\n  skipped downstream (left as they were): {', '.join(skipped)}"
    return message
