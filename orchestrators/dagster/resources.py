"""Dagster resources: the source API (token through ``EnvVar``), the API clock, dbt.

The warehouse is no resource: every asset writes through core (dlt and dbt), which chooses the
engine from the one warehouse setting, so a Dagster-side connection would be a second path to it."""

import sys
from functools import cached_property
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource
from dagster_dbt.compat import DBT_PYTHON_VERSION
from packaging.version import Version

from core import settings


class SourceAPI(dg.ConfigurableResource):
    """The flights source API. ``token`` comes from ``EnvVar``: the UI shows the variable's name,
    never its value, and Dagster keeps it out of run config and event logs."""

    url: str
    token: str

    def status(self) -> dict:
        from core.source_api import api_status

        return api_status(self.url, self.token)


class ApiClock(dg.ConfigurableResource):
    """The source API's clock a run asks for (launchpad / run config); None: the latest."""

    as_of: str | None = None


class EnvironmentDbt(DbtCliResource):
    """``DbtCliResource`` on this environment's own ``dbt`` executable (``dbt_executable``).

    Before every ``dbt build`` dagster-dbt asks the executable for its version (``dbt --version``:
    a second dbt start-up, ~3.5 s of a full-year run). The executable is the dbt-core installed
    beside dagster-dbt, whose version dagster-dbt has already read, so it is answered from there.
    """

    @cached_property
    def _cli_version(self) -> Version:
        return DBT_PYTHON_VERSION


def resources() -> dict[str, dg.ConfigurableResource | object]:
    return {
        "source_api": SourceAPI(
            url=dg.EnvVar(settings.SOURCE_API_URL_ENV),
            token=dg.EnvVar(settings.SOURCE_API_TOKEN_ENV),
        ),
        "api_clock": ApiClock(),
        "dbt": EnvironmentDbt(
            project_dir=str(settings.TRANSFORM_DIR),
            profiles_dir=str(settings.TRANSFORM_DIR),
            # this environment's dbt, whatever PATH says (dagster dev, tests, cron)
            dbt_executable=str(Path(sys.executable).parent / "dbt"),
        ),
    }
