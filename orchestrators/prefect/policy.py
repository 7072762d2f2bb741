"""Quartet's policies in Prefect's terms: may a retry help (core.failures), and [orchestration].

A failed ingestion task is retried when ``core.failures.may_retry`` says a retry may help: the
task's ``retry_condition_fn`` answers it. Prefect adds no jitter of its own (none is configured).

Every [orchestration] field is honoured or refused here, by name, when the flows load:

==========================  =================================================================
unit_retries                the ingestion task's ``retries`` (refused above Prefect's 50)
retry_delay_seconds,        its ``retry_delay_seconds``, one wait per retry:
retry_backoff,              ``policy.retry_delays()``
max_retry_delay_seconds
schedule                    the ``full`` deployment's cron (refused unless Prefect parses it)
source_poll_seconds         the watcher deployment's interval (refused unless positive)
heartbeat_seconds           the warehouse slot's lease (Prefect's floor: 60 s); a lost flow-run
                            process is reported when it exits, long before either lapses
follow_poll_seconds         the CLI's poll of a deployed run
healthy_timeout_seconds     ``quartet up`` and ``quartet ui``
==========================  =================================================================
"""

from __future__ import annotations

from prefect.client.schemas.objects import State, TaskRun
from prefect.client.schemas.schedules import CronSchedule
from prefect.tasks import Task

from core import failures
from core.failures import ConfigError
from core.ingestion import OrchestrationPolicy

#: Prefect's API refuses concurrency leases shorter than a minute
MIN_LEASE_SECONDS = 60
#: Prefect refuses more retry delays per task
MAX_RETRIES = 50


def may_retry(task: Task, task_run: TaskRun, state: State) -> bool:
    """The ingestion task's ``retry_condition_fn``: core's answer for the failure it holds."""
    try:
        state.result()
    except Exception as exc:
        return failures.may_retry(exc)
    return True


def task_retries(policy: OrchestrationPolicy) -> dict:
    """The retry options of a task that loads a unit."""
    return {
        "retries": policy.unit_retries,
        "retry_delay_seconds": policy.retry_delays(),
        "retry_condition_fn": may_retry,
    }


def lease_seconds(policy: OrchestrationPolicy) -> float:
    """How long a warehouse slot stays held after its holder stopped renewing it."""
    return max(MIN_LEASE_SECONDS, policy.heartbeat_seconds)


def honoured(policy: OrchestrationPolicy) -> OrchestrationPolicy:
    """``policy``, once every field is known to be expressible in Prefect; else ConfigError."""
    if not 0 <= policy.unit_retries <= MAX_RETRIES:
        raise _refuse(
            "unit_retries",
            policy.unit_retries,
            f"a Prefect task takes 0 to {MAX_RETRIES} retries, each with its own delay",
        )
    try:
        CronSchedule(cron=policy.schedule)
    except ValueError as exc:
        raise _refuse("schedule", policy.schedule, f"Prefect parses no such cron ({exc})") from None
    if policy.source_poll_seconds <= 0:
        raise _refuse(
            "source_poll_seconds",
            policy.source_poll_seconds,
            "the watcher deployment's interval must be positive",
        )
    return policy


def _refuse(field: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"prefect cannot honour [orchestration] {field} = {value!r}: {why}")
