"""The source API as the pipeline sees it: start the bundled one (``python -m source_api``, a
process of its own: core does not import it), or use the one ``SOURCE_API_URL`` names; ask it for
its status, move its clock."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from core import settings

__all__ = ["SourceAPIConfig", "api_status", "running_source_api", "set_clock"]


@dataclass(frozen=True)
class SourceAPIConfig:
    """How to start a local API (ignored when SOURCE_API_URL points at an existing one)."""

    as_of: str | None = None
    scale: int = 1
    fault_rate: float = 0.0
    fault_seed: int = 0
    malformed: tuple[str, ...] = ()

    def argv(self, port: int = 0) -> list[str]:
        """The child's flags; the token is never one of them (a command line is visible to every
        local user in ``ps``): the child reads it from its environment, see :func:`child_env`."""
        args = ["--port", str(port), "--scale", str(self.scale)]
        if self.as_of:
            args += ["--as-of", self.as_of]
        if self.fault_rate:
            args += ["--fault-rate", str(self.fault_rate), "--fault-seed", str(self.fault_seed)]
        for spec in self.malformed:
            args += ["--malform", spec]
        return args


def child_env(token: str) -> dict[str, str]:
    """The environment a source API child gets its token from (never its command line)."""
    return {settings.SOURCE_API_TOKEN_ENV: token}


def start_process(argv: list[str], token: str) -> tuple[subprocess.Popen, str]:
    """Start ``python -m source_api <argv>`` serving ``token``; return the process and its
    URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "source_api", *argv],
        stdout=subprocess.PIPE,
        text=True,
        cwd=settings.REPO_ROOT,
        env={**os.environ, **child_env(token)},
    )
    assert proc.stdout is not None
    other = []
    for line in proc.stdout:  # the child prints its URL once it listens
        if "SOURCE_API_URL=" in line:  # (anything before it on the line is noise)
            return proc, line.strip().split("SOURCE_API_URL=", 1)[1]
        other.append(line.rstrip())
    raise RuntimeError(f"the source API did not start (exit code {proc.wait()}): {other[-5:]}")


@contextlib.contextmanager
def running_source_api(config: SourceAPIConfig | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(url, token)`` of the source API.

    When ``SOURCE_API_URL`` is set it is used as it is (with ``SOURCE_API_TOKEN``). A project
    whose source is not the demo API (``[source] demo_api = false``) gets ``("", "")``. Otherwise a
    local API is started in a child process on a free loopback port, and stopped on exit. The
    child publishes its URL in SOURCE_API_URL for the duration, so code that runs in other
    processes (orchestrator workers) finds the same API.
    """
    url = os.environ.get(settings.SOURCE_API_URL_ENV)
    token = os.environ.get(settings.SOURCE_API_TOKEN_ENV) or settings.DEV_API_TOKEN
    if url:
        yield url.rstrip("/"), token
        return
    from core import project

    if not project.current().demo_api:  # the project's source is not the demo API: none runs
        yield "", ""
        return
    config = config or SourceAPIConfig()
    proc, url = start_process(config.argv(), token)
    previous = {
        k: os.environ.get(k) for k in (settings.SOURCE_API_URL_ENV, settings.SOURCE_API_TOKEN_ENV)
    }
    try:
        os.environ[settings.SOURCE_API_URL_ENV] = url
        os.environ[settings.SOURCE_API_TOKEN_ENV] = token
        yield url, token
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _call(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"source API {url} answered {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise ConnectionError(f"source API {url} is unreachable: {exc.reason}") from None


def api_status(url: str, token: str) -> dict:
    """The API's clock and watermark (what orchestrators' sensors poll)."""
    return _call(f"{url}/v1/status", token)


def set_clock(url: str, token: str, as_of: str) -> dict:
    """Advance (or rewind) the API's clock: "new data has been published"."""
    return _call(f"{url}/v1/clock", token, "POST", {"as_of": as_of})
