"""Quartet on Dagster: the shared dlt + dbt pipeline as software-defined assets.

``definitions.py`` assembles the ``Definitions`` (``dagster dev -m orchestrators.dagster.definitions``);
``python -m orchestrators.dagster run|ui|lineage`` is the entry point (see README.md).
"""
