"""Dagster resources: the source API (token through ``EnvVar``), the API clock, dbt.

The warehouse is no resource: every asset writes through core (dlt and dbt), which chooses the
engine from the one warehouse setting, so a Dagster-side connection would be a second path to it.
"""

import sys
from pathlib import Path

import dagster as dg

from core import settings
from orchestrators.dagster import levers
from orchestrators.dagster.project import DBT_PROJECT


class SourceAPI(dg.ConfigurableResource):
    """The flights source API. ``token`` comes from ``EnvVar``: the UI shows the variable's name,
    never its value, and Dagster keeps it out of run config and event logs."""

    url: str
    token: str

    def status(self) -> dict:
        from core.source_service import api_status

        return api_status(self.url, self.token)


class ApiClock(dg.ConfigurableResource):
    """The source API's clock a run asks for (launchpad / run config); None: the latest."""

    as_of: str | None = None


def resources() -> dict[str, dg.ConfigurableResource | object]:
    dbt_resource = levers.dbt_resource_type()  # stock: DbtCliResource
    return {
        "source_api": SourceAPI(
            url=dg.EnvVar(settings.SOURCE_API_URL_ENV),
            token=dg.EnvVar(settings.SOURCE_API_TOKEN_ENV),
        ),
        "api_clock": ApiClock(),
        "dbt": dbt_resource(
            project_dir=DBT_PROJECT,
            # this environment's dbt, whatever PATH says (dagster dev, tests, cron)
            dbt_executable=str(Path(sys.executable).parent / "dbt"),
        ),
    }
