"""The pipeline as software-defined assets: one dlt asset per source resource, one per dbt model.

* ``<raw dataset>/<table>``: ``@dlt_assets`` (dagster-dlt) declare one asset per resource the
  project declares, one op each so that each retries and shows on its own. An asset's key is the
  relation dlt writes (dataset, table), and a dbt source's key the relation it reads (its
  ``schema``, its ``identifier`` or name), so the dbt sources are the dlt assets whatever the
  source is called in dbt: one lineage graph.
* dbt models: ``@dbt_assets`` (dagster-dbt) over the project's prepared manifest, grouped by
  layer; dbt tests are asset checks (source tests included) and ``dbt build`` skips what is
  downstream of a failing one.
* Both are partitioned as the project is (``partitions.py``): by month, by day, or not at all.
* Every op that writes claims the ``quartet_warehouse`` pool and core's writer lock on the
  configured warehouse: on DuckDB the pool's limit is 1 and the lock a file lock; on PostgreSQL
  the pool admits every ingestion unit at once and the lock is a no-op.
* Failures follow core's one answer to "may a retry help?" (``policy.py``): a refused token, a
  malformed record or a failing dbt test fail the step at once; a dropped connection or a busy
  warehouse is retried after the policy's delays.
"""

import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtCliResource,
    dbt_assets,
)
from dagster_dlt import DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from core import dbt as core_dbt
from core import settings
from core.failures import DbtBuildError
from core.ingestion import window
from core.pipeline import dlt_pipeline, ingest, source_for
from core.warehouse import writer_lock
from orchestrators.dagster import levers
from orchestrators.dagster.partitions import (
    BACKFILL_POLICY,
    PARTITIONS,
    WHOLE_RANGE,
    run_windows,
)
from orchestrators.dagster.policy import retried_as_policy_says
from orchestrators.dagster.project import (
    CONFIG,
    DBT_FINISHED_AT,
    DBT_PROJECT,
    DBT_STARTED_AT,
    NAME,
    PIPELINE,
    POLICY,
    UNIT_TESTS_FAILED,
    UNIT_TESTS_PASSED,
    WAREHOUSE_POOL,
)
from orchestrators.dagster.resources import ApiClock, SourceAPI

#: placeholders for the definition-time source (only its resources and schema are read then)
_DECLARED_URL, _DECLARED_TOKEN = "http://source-api.invalid", "supplied-at-run-time"


class RawTables(DagsterDltTranslator):
    """dlt resource ``orders`` -> asset ``<raw dataset>/orders`` in the dataset's group: the
    relation dlt writes, which is the key of the dbt source that reads it (:class:`DbtLayers`)."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        return (
            super()
            .get_asset_spec(data)
            .replace_attributes(
                key=dg.AssetKey([settings.RAW_SCHEMA, data.resource.name]),
                deps=[],  # the source itself (an API, files) is not an asset here
                group_name=settings.RAW_SCHEMA,
            )
        )


def _ingestion_assets(resource: str) -> dg.AssetsDefinition:
    @dlt_assets(
        dlt_source=source_for(
            window(CONFIG, resources=(resource,)),
            base_url=_DECLARED_URL,
            token=_DECLARED_TOKEN,
            config=CONFIG,
        ),
        dlt_pipeline=dlt_pipeline(PIPELINE),
        name=f"ingest_{resource}",
        dagster_dlt_translator=RawTables(),
        partitions_def=PARTITIONS,
        backfill_policy=BACKFILL_POLICY,
        pool=WAREHOUSE_POOL,
    )
    def _assets(
        context: dg.AssetExecutionContext, source_api: SourceAPI, api_clock: ApiClock
    ) -> Iterator[dg.MaterializeResult]:
        # Departs from dagster-dlt's stock `yield from dlt.run(context=context, dlt_source=...)`:
        # loads through core's `ingest`, bare's load (integration_patterns.py keeps the stock one).
        fetched = new = 0
        partitions = []
        with retried_as_policy_says(context, POLICY):
            for run_window in run_windows(context, (resource,), api_clock.as_of):
                result = ingest(
                    NAME,
                    run_window,
                    base_url=source_api.url,
                    token=source_api.token,
                    config=CONFIG,
                    log=context.log.info,
                )
                fetched += result.rows_fetched.get(resource, 0)
                new += result.new_rows.get(resource, 0)
                partitions.append(run_window.partition or WHOLE_RANGE)
        (key,) = context.selected_asset_keys
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "partitions": ", ".join(partitions),
                "rows_fetched": fetched,
                "new_rows": new,
            },
        )

    return _assets


ingestion_assets = [_ingestion_assets(resource) for resource in CONFIG.resources]


class DbtLayers(DagsterDbtTranslator):
    """dbt sources keyed by the relation they read; models grouped by layer (their schema:
    staging, intermediate, marts)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        # dagster-dbt keys a source [source name, table] (``ecom/customers``); the relation,
        # [schema, identifier], is the dlt asset's key when the source reads the raw dataset,
        # so the models depend on the dlt assets themselves, not on stand-ins of them
        if dbt_resource_props["resource_type"] == "source":
            table = dbt_resource_props["identifier"] or dbt_resource_props["name"]
            return dg.AssetKey([dbt_resource_props["schema"], table])
        return super().get_asset_key(dbt_resource_props)

    def get_asset_spec(self, manifest, unique_id, project) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id)
        if node and node["resource_type"] == "model":
            spec = spec.replace_attributes(group_name=node["config"].get("schema") or "main")
        return spec


DBT_TRANSLATOR = DbtLayers(
    settings=DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True)
)


@dbt_assets(
    manifest=core_dbt.prepare_manifest(),  # DBT_PROJECT.manifest_path, prepared by core
    project=DBT_PROJECT,
    dagster_dbt_translator=DBT_TRANSLATOR,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    pool=WAREHOUSE_POOL,
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
    # models and tests in DAG order: a failing test skips (blocks) what is downstream of it;
    # incremental models pick up whatever the raw layer has gained since the last build
    target = PIPELINE.dbt_target_dir
    levers.seed_dbt_parse(target)
    # the configured warehouse (a DuckDB file or a PostgreSQL URL), as dbt's profile targets it
    with retried_as_policy_says(context, POLICY):
        with writer_lock(PIPELINE.location, purpose="dagster dbt build"):
            # raise_on_error=False only to re-raise below with the failing tests named;
            # dagster-dbt echoes dbt's log to stdout (a step's compute log): colours on a tty
            colours = "--use-colors" if sys.stdout.isatty() else "--no-use-colors"
            invocation = dbt.cli(
                ["build", colours], context=context, target_path=target, raise_on_error=False
            )
            yield from with_dbt_facts(invocation, context)
        if not invocation.is_successful():
            failures = core_dbt.failures_from_run_results(
                invocation.get_artifact("run_results.json")
            )
            # a failing dbt test is a fact about the data: core says no retry helps
            raise DbtBuildError(
                core_dbt.failure_report(failures, "see the dbt logs of this step"), failures
            )


def with_dbt_facts(invocation: DbtCliInvocation, context: dg.AssetExecutionContext) -> Iterator:
    """``invocation.stream()``, each model's and test's event carrying dbt's own facts.

    dagster-dbt turns a dbt unit test into no event at all (it is no asset check), so a model's
    line could not count it; and a Dagster event's timestamp is when Dagster logged it, not when
    dbt ran the node. A unit test runs before its model in ``dbt build``: its result is known
    when the model's output is yielded.
    """
    manifest = invocation.manifest
    unit_tests: dict[str, list[bool]] = defaultdict(list)  # model unique_id -> passed, per test
    for event in invocation.stream_raw_events():
        info = event.raw_event["data"].get("node_info") or {}
        unique_id = info.get("unique_id") or ""
        if (
            unique_id.startswith("unit_test.")
            and event.raw_event["info"]["name"] == "LogTestResult"
        ):
            model = manifest["unit_tests"][unique_id]["depends_on"]["nodes"][0]
            # dbt reports a unit test's result as a test's: "pass", "fail" or "error"
            status = event.raw_event["data"].get("status") or info.get("node_status")
            unit_tests[model].append(str(status).lower() in ("pass", "success"))
        facts = {
            key: dg.MetadataValue.text(info[field])
            for key, field in (
                (DBT_STARTED_AT, "node_started_at"),
                (DBT_FINISHED_AT, "node_finished_at"),
            )
            if info.get(field)
        }
        for dagster_event in event.to_default_asset_events(
            manifest=manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=context,
            target_path=invocation.target_path,
            project=invocation.project,
        ):
            if isinstance(dagster_event, dg.Output | dg.AssetMaterialization):
                extra = dict(facts)
                if unique_id in unit_tests:
                    results = unit_tests[unique_id]
                    extra[UNIT_TESTS_PASSED] = sum(results)
                    extra[UNIT_TESTS_FAILED] = len(results) - sum(results)
                dagster_event = dagster_event.with_metadata({**dagster_event.metadata, **extra})
            elif isinstance(dagster_event, dg.AssetCheckResult | dg.AssetCheckEvaluation):
                dagster_event = dagster_event._replace(metadata={**dagster_event.metadata, **facts})
            yield dagster_event
