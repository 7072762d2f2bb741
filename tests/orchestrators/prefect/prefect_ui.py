"""Prefect's server behind basic auth, as its tests reach it: the API with and without the
credential, and the UI in a real browser, signed in on its login page as a person would."""

from __future__ import annotations

import re

import httpx

#: the answer of a Prefect server with PREFECT_SERVER_API_AUTH_STRING to a call without it
UNAUTHORIZED = 401


def basic(auth_string: str) -> tuple[str, str]:
    """``user:password`` (what Prefect's settings and UI take) as httpx's ``auth=``."""
    user, _, password = auth_string.partition(":")
    return user, password


def secret_endpoints(api: str, auth: tuple[str, str]) -> dict[str, tuple[str, str, dict]]:
    """The calls that hand out a Secret block's value: ``name -> (method, url, json)``. The
    block documents' ids are read with the credential."""
    response = httpx.post(f"{api}/block_documents/filter", json={}, auth=auth, timeout=10)
    response.raise_for_status()
    ids = [d["id"] for d in response.json()]
    assert ids, "the server holds no block document: the Secret block was not provisioned"
    calls = {"filter": ("POST", f"{api}/block_documents/filter", {"include_secrets": True})}
    for block_id in ids:
        calls[f"read {block_id}"] = (
            "GET",
            f"{api}/block_documents/{block_id}?include_secrets=true",
            {},
        )
    return calls


def assert_secrets_need_the_credential(api: str, auth_string: str, token: str) -> None:
    """Without the credential every call that could reveal the token is refused (and does not
    carry it); with it, the same calls answer."""
    auth = basic(auth_string)
    for name, (method, url, body) in secret_endpoints(api, auth).items():
        kwargs = {"json": body} if method == "POST" else {}
        anonymous = httpx.request(method, url, timeout=10, **kwargs)
        assert anonymous.status_code == UNAUTHORIZED, (name, anonymous.status_code)
        assert token not in anonymous.text, name
        wrong = httpx.request(method, url, timeout=10, auth=("quartet", "wrong"), **kwargs)
        assert wrong.status_code == UNAUTHORIZED, (name, wrong.status_code)
        signed_in = httpx.request(method, url, timeout=10, auth=auth, **kwargs)
        assert signed_in.status_code == 200, (name, signed_in.status_code)
    # the readiness probe stays open: it says nothing but "up"
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200


def sign_in(page, url: str, auth_string: str) -> None:
    """Sign in on the UI's login page with the auth string (``user:password``, as the page asks
    for it), then open ``url``. A deep link opened without the credential does not reliably
    land on the login page (the page's own API calls fail first), so the login page is opened
    first, as a person sent there would."""
    base = re.match(r"(https?://[^/]+)", url).group(1)
    page.goto(f"{base}/login")
    field = page.get_by_placeholder("admin:pass")
    field.wait_for(timeout=120_000)
    field.fill(auth_string)
    page.get_by_role("button", name="Login").click()
    page.wait_for_url(lambda current: "/login" not in current, timeout=120_000)
    page.goto(url)


def open_flow_run(page, url: str, run_id, tab: str) -> dict[str, str]:
    """Open a flow run's page in the UI on ``tab``, its graph above the tabs; return the graph's
    nodes (label -> state) as the page fetched them to draw them, {} if it never did.

    The UI draws the graph only once the run has left Scheduled/Pending, and asks first when the
    run has over 2000 task runs; ours are final and far smaller, so it draws straight away. It
    draws on a canvas (pixi.js): node labels are pixels, not DOM text, so the nodes are read from
    the ``graph-v2`` response the graph itself requested.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        with page.expect_response(
            lambda r: f"/flow_runs/{run_id}/graph-v2" in r.url and r.ok, timeout=120_000
        ) as graph:
            page.goto(f"{url}/runs/flow-run/{run_id}")
        page.locator(".flow-run-graph .run-graph__stage canvas").wait_for(timeout=60_000)
    except PlaywrightTimeout:
        return {}
    page.locator(".p-tab").get_by_text(tab, exact=True).click()
    return {node["label"]: node["state_type"] for _id, node in graph.value.json()["nodes"]}
