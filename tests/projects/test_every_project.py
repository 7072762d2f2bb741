"""What holds for every project under examples/ (the generic assertions; each example's own
expectations live in its folder): the file loads, the dlt source declares what the file says,
the dbt project joins the raw tables by relation, the graph has no cycle, and a bare run builds
every model into a schema the fingerprint compares, twice to the same warehouse.

Each project runs in a process of its own (its QUARTET_PROJECT and QUARTET_HOME), as a user runs
it, so that no module keeps the other project's settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core import project, settings
from tests.helpers import in_project

PROJECTS = sorted((settings.REPO_ROOT / "examples").glob("*/quartet.toml"))
#: a project whose bare run is the fast tier's to pay for (nycflights: one month, its clock)
RUN_FLAGS = {"nycflights": ["--partition", "2013-01", "--as-of", "2013-01-31"]}


@pytest.mark.parametrize("file", PROJECTS, ids=[p.parent.name for p in PROJECTS])
def test_the_source_declares_what_the_project_file_says(file: Path, tmp_path: Path) -> None:
    chosen = project.load(file)
    facts = in_project(
        file,
        home=tmp_path,
        code="""
import json
from core import project
from core.ingestion import load_config, window
from core.pipeline import source_for
chosen = project.current()
source = source_for(window(load_config()), base_url="http://unused", token="unused",
                    config=load_config())
columns = {name: r.compute_table_schema()["columns"] for name, r in source.resources.items()}
print("RESULT " + json.dumps({name: [c for c, hint in cols.items() if hint.get("primary_key")]
                  for name, cols in columns.items()}))
""",
    )
    assert sorted(facts) == sorted(chosen.resource_names)  # one resource per declared name
    for resource in chosen.resources:  # each with the declared key (as dlt will merge on it)
        assert sorted(facts[resource.name]) == sorted(resource.primary_key), resource.name


@pytest.mark.parametrize("file", PROJECTS, ids=[p.parent.name for p in PROJECTS])
def test_the_dbt_project_reads_the_raw_tables_by_relation_without_a_cycle(
    file: Path, tmp_path: Path
) -> None:
    chosen = project.load(file)
    graph = in_project(
        file,
        home=tmp_path,
        code="""
import json
from core import lineage
graph = lineage.canonical()
graph.order()  # raises on a cycle
print("RESULT " + json.dumps(graph.to_json()))
""",
    )
    layers = {node["id"]: node["layer"] for node in graph["nodes"]}
    raw = {n for n, layer in layers.items() if layer == "raw"}
    assert raw == {f"{chosen.raw_dataset}.{r}" for r in chosen.resource_names}
    read = {a for a, _ in map(tuple, graph["edges"]) if a in raw}
    assert read == raw, f"raw tables no model reads: {sorted(raw - read)}"
    assert any(layer != "raw" for layer in layers.values())


@pytest.mark.parametrize("file", PROJECTS, ids=[p.parent.name for p in PROJECTS])
def test_a_bare_run_builds_every_model_and_a_second_run_changes_nothing(
    file: Path, tmp_path: Path
) -> None:
    flags = RUN_FLAGS.get(project.load(file).name, [])
    facts = in_project(
        file,
        home=tmp_path,
        code=f"""
import json
from core import dbt, pipeline, settings
from lab.fingerprint import fingerprint, warehouse_schemas
flags = {flags!r}
partitions = [flags[1]] if flags[:1] == ["--partition"] else None
as_of = flags[3] if len(flags) > 3 else None
pipeline.run("bare", partitions=partitions, as_of=as_of, log=lambda _: None)
first = fingerprint(settings.for_pipeline("bare").warehouse)
pipeline.run("bare", partitions=partitions, as_of=as_of, log=lambda _: None)
second = fingerprint(settings.for_pipeline("bare").warehouse)
models = sorted(f"{{n['schema']}}.{{n['alias'] or n['name']}}"
                for n in dbt.load_manifest()["nodes"].values() if n["resource_type"] == "model")
print("RESULT " + json.dumps({{"tables": {{k: v.rows for k, v in first.tables.items()}},
                  "same": first.digest() == second.digest(), "models": models,
                  "schemas": warehouse_schemas()}}))
""",
    )
    missing = [m for m in facts["models"] if m not in facts["tables"]]
    assert not missing, f"models the fingerprint does not see: {missing}"
    assert all(m.split(".")[0] in facts["schemas"] for m in facts["models"])
    assert all(rows > 0 for table, rows in facts["tables"].items() if table in facts["models"])
    assert facts["same"], "a second run of the same data changed the warehouse"
