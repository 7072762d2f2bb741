"""Dagster resources: the source's address (token through ``EnvVar``), its clock, dbt.

``source_api`` and ``api_clock`` matter only for a project that has them: the address is the
bundled demo API's when the project runs it (``[source] demo_api``), or another API's that
SOURCE_API_URL names; it is empty for a source that finds its data itself (files, say). The
clock is what a run asks for with ``--as-of``, which only a project with ``[time] clock`` takes.

The warehouse is no resource: every asset writes through core (dlt and dbt), which chooses the
engine from the one warehouse setting, so a Dagster-side connection would be a second path to it.
"""

import sys
from pathlib import Path

import dagster as dg

from core import settings
from orchestrators.dagster import levers
from orchestrators.dagster.project import DBT_PROJECT, PROJECT


class SourceAPI(dg.ConfigurableResource):
    """The source's address and token, handed to the project's source factory and freshness
    probe. ``token`` comes from ``EnvVar``: the UI shows the variable's name, never its value,
    and Dagster keeps it out of run config and event logs."""

    url: str
    token: str

    def published_through(self) -> str | None:
        """The source's newest publication (ISO), from the project's freshness probe."""
        from core.project import freshness

        probe = freshness(PROJECT)
        return probe(self.url, self.token) if probe else None


class ApiClock(dg.ConfigurableResource):
    """The source's clock a run asks for (launchpad / run config); None: the latest."""

    as_of: str | None = None


def resources() -> dict[str, dg.ConfigurableResource | object]:
    # both always bound: the ingestion op takes them whatever the project (an empty address and
    # no clock where it has neither)
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
