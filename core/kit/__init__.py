"""The adapter kit: what every orchestrator adapter needs, written once.

* :func:`adapter_main` - the adapter's command line (run, ui, lineage, up, down, status) over the
  file plan ``run.py`` / ``ui.py`` / ``lineage.py`` / ``deploy.py``; flags validated once.
* :class:`RunRequest`, :class:`UiRequest` - what a verb is asked to do.
* :class:`Service`, :class:`Topology`, :func:`wait_until`, :func:`url_answers` - processes started
  in their own group, ready when a URL or check answers, stopped with all they started; every
  error (:class:`ServiceError`) names the service and its log.
* :func:`exit_process` - a command's end once its work is done, without the interpreter's teardown.
* :func:`source_api` - the source API from the ingestion config (or SOURCE_API_URL when set).
* :func:`policy` - the [orchestration] policy numbers (retries, schedule, poll intervals).
* ``home(name)``, ``log_dir(name)`` - each orchestrator's state under ``.quartet/<name>/``.
* :mod:`core.kit.progress` - one line per unit; the orchestrator's own log in a file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from core import settings
from core.failures import NotDeployed, RunFailed, ServiceError
from core.ingestion import IngestionConfig, OrchestrationPolicy, load_config
from core.kit.command import (
    EXIT_FAILED,
    EXIT_USAGE,
    RunRequest,
    UiRequest,
    adapter_main,
    validate,
)
from core.kit.service import Service, Topology, url_answers, wait_until
from core.kit.signals import exit_process

home = settings.orchestrator_home
log_dir = settings.log_dir

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "NotDeployed",
    "RunFailed",
    "RunRequest",
    "Service",
    "ServiceError",
    "Topology",
    "UiRequest",
    "adapter_main",
    "exit_process",
    "home",
    "log_dir",
    "policy",
    "source_api",
    "source_api_config",
    "url_answers",
    "validate",
    "wait_until",
]


def policy() -> OrchestrationPolicy:
    return load_config().orchestration


def source_api_config(config: IngestionConfig | None = None):
    """How to start the local source API, from the ingestion config (scale, faults)."""
    from core.source_service import SourceAPIConfig

    config = config or load_config()
    return SourceAPIConfig(
        scale=config.scale, fault_rate=config.fault_rate, fault_seed=config.fault_seed
    )


@contextlib.contextmanager
def source_api(config: IngestionConfig | None = None) -> Iterator[tuple[str, str]]:
    """``(url, token)`` of the source API: SOURCE_API_URL when set, else one started from config."""
    from core.source_service import running_source_api

    with running_source_api(source_api_config(config)) as (url, token):
        yield url, token
