"""How Quartet runs, shows, deploys and times Dagster: the adapter kit's file plan (run, ui,
lineage, deploy, timeline), behind the files a user of Dagster writes."""
