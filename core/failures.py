"""What can go wrong, and may a retry help? One answer for bare and the four adapters (ADR 0017).

Every error type Quartet raises is defined here, with the one rule every adapter maps to its
orchestrator's idiom:

==========  ==========================================================================
Dagster     ``dg.Failure(allow_retries=False)`` when :func:`may_retry` says no
Airflow     ``AirflowFailException`` when :func:`may_retry` says no
Prefect     ``retry_condition_fn`` answers :func:`may_retry`
Temporal    ``ApplicationError(non_retryable=not may_retry(exc))``
==========  ==========================================================================

**A retry may help** when the root cause is transient: the network (a refused or dropped
connection, a timeout), the source answering 5xx, 429 or 408, a warehouse another writer holds
(:class:`WarehouseBusyError`), a worker lost mid-unit, or anything unforeseen (the orchestrator's
retries exist for surprises). dlt already retries each HTTP request, so a unit retry covers what
outlived those.

**No retry helps** with bad input, which fails the same way every time: a token or request the
source refuses (4xx but 408/429), a record that breaks the contract, a wrong setting, a failing
dbt node, a file in the warehouse's place that is not one, a warehouse server that refuses the
credentials, a module that does not import. Retrying those only multiplies the wait.

:data:`KNOWN` are the failures whose message says everything: command lines print them without a
traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.dbt import NodeResult


class ConfigError(ValueError):
    """A wrong setting in core/ingestion.toml, an environment variable or a command-line flag."""


class MalformedRecordError(ValueError):
    """A record from the source API that breaks the resource's contract."""


class IngestionError(RuntimeError):
    """Loading from the source API failed; nothing of the failed step was loaded."""


class DbtBuildError(RuntimeError):
    """dbt build finished with failed tests or errored models; names them."""

    def __init__(self, message: str, failures: list[NodeResult]) -> None:
        super().__init__(message)
        self.failures = failures

    def __reduce__(self):  # raised in another process (the bare run's dbt process) and re-raised
        return type(self), (str(self), self.failures)


class WarehouseBusyError(RuntimeError):
    """Another process writes to the warehouse and did not finish within the timeout."""


class WarehouseConnectionError(RuntimeError):
    """The warehouse cannot be used: a PostgreSQL server that refuses, a file that is not DuckDB;
    names it (password masked)."""


class WarehouseNotFoundError(FileNotFoundError):
    """A warehouse to read (fingerprint, compare) does not exist."""


class NotAWarehouseError(ValueError):
    """The path exists but DuckDB cannot read it as a database (or it is held by a writer)."""


class PostgresError(RuntimeError):
    """The PostgreSQL server could not be started, stopped or reached; names service and log."""


class ServiceError(RuntimeError):
    """A service did not start, died, or did not answer in time; names it and its log."""


class RunFailed(RuntimeError):
    """An orchestrator reported the run as failed; the message names what failed and where."""


class NotDeployed(RuntimeError):
    """A deployed-mode verb was used while the services are not up (or not built yet)."""


#: failures no retry fixes, by type
PERMANENT: tuple[type[BaseException], ...] = (
    ConfigError,
    MalformedRecordError,
    DbtBuildError,
    WarehouseConnectionError,
    NotAWarehouseError,
    ImportError,
)

#: HTTP answers that mean "later may work"; every other 4xx means "never"
TRANSIENT_STATUS = frozenset({408, 429})

#: failures printed without a traceback: their message names the culprit
KNOWN: tuple[type[BaseException], ...] = (
    ConfigError,
    MalformedRecordError,
    IngestionError,
    DbtBuildError,
    WarehouseBusyError,
    WarehouseConnectionError,
    WarehouseNotFoundError,
    NotAWarehouseError,
    PostgresError,
    ServiceError,
    RunFailed,
    NotDeployed,
)


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def root_cause(exc: BaseException, *, skip_remote: bool = False) -> BaseException:
    """The innermost exception of the chain (``skip_remote``: not a worker's bare traceback)."""
    last = exc
    for cause in causes(exc):
        if skip_remote and type(cause).__name__ == "_RemoteTraceback":
            break
        last = cause
    return last


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an error that carries a response (requests, httpx), else None."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def may_retry(exc: BaseException) -> bool:
    """May a retry of the unit help? No for bad input (see the module doc), else yes."""
    for cause in causes(exc):
        if isinstance(cause, PERMANENT):
            return False
        status = http_status(cause)
        if status is not None and 400 <= status < 500 and status not in TRANSIENT_STATUS:
            return False
    return True


def is_known(exc: BaseException) -> bool:
    """Whether ``exc`` is printed as its message alone (no traceback)."""
    return isinstance(exc, KNOWN)
