"""What Dagster's API shows a caller without credentials (it has no login to ask for one).

Shared by the dev-mode UI test and the deployed-mode tests: the same GraphQL API, asked the same
questions, must never answer with the source API's token.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from core import settings

#: every answer of Dagster's GraphQL API that could carry the source API's token: the resources'
#: configured values, the environment variables the code location uses, each run's config and
#: tags, the instance's configuration
TOKEN_PROBE = """query Probe($repo: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $repo) {
    __typename
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
  }
  utilizedEnvVarsOrError(repositorySelector: $repo) {
    __typename
    ... on EnvVarWithConsumersList { results { envVarName } }
  }
  runsOrError { ... on Runs { results { runId runConfigYaml tags { key value } } } }
  instance { info }
}"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict | None:
    """An answer of Dagster's GraphQL API at ``url``, asked without any credential."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def assert_graphql_keeps_the_token(url: str, location: str, token: str) -> dict:
    """Asked without credentials for resources, env vars, run configs and the instance, Dagster
    answers (there is no login to refuse) without the token; returns the answer."""
    answer = graphql(url, TOKEN_PROBE, {"repo": {"repositoryLocationName": location,
                                                 "repositoryName": "__repository__"}})  # fmt: skip
    assert answer and "data" in answer, answer
    data = answer["data"]
    resources = {r["name"]: r for r in data["allTopLevelResourceDetailsOrError"]["results"]}
    configured = {v["key"]: v for v in resources["source_api"]["configuredValues"]}
    # the token is configured from the environment: Dagster shows the variable's name only
    assert configured["token"]["type"] == "ENV_VAR"
    assert configured["token"]["value"] == settings.SOURCE_API_TOKEN_ENV
    env_vars = {e["envVarName"] for e in data["utilizedEnvVarsOrError"]["results"]}
    assert settings.SOURCE_API_TOKEN_ENV in env_vars
    assert data["runsOrError"]["results"], "no run to look into"
    assert token not in json.dumps(answer), "Dagster's GraphQL API hands out the token"
    return data
