"""Quartet's policies in Dagster's terms: may a retry help (core.failures), and [orchestration].

A failure core says no retry helps becomes ``dg.Failure(allow_retries=False)``; any other one a
``dg.RetryRequested`` that waits what the policy's ``retry_delays()`` say. ``RetryRequested``,
not a job-level ``RetryPolicy``: Dagster's exponential backoff waits ``(2**n - 1) * delay`` with
no cap, so it cannot follow ``retry_backoff`` or ``max_retry_delay_seconds``.

Every [orchestration] field is honoured or refused here, by name, when the definitions load:

==========================  =================================================================
unit_retries                ``RetryRequested(max_retries=...)``; deployed: ``run_retries``
retry_delay_seconds,        the wait before each retry, ``policy.retry_delays()``
retry_backoff,
max_retry_delay_seconds
schedule                    ``build_schedule_from_partitioned_job`` on monthly or daily
                            partitions (refused unless its cron matches them); the cron as it
                            is on an unpartitioned project
source_poll_seconds         the sensor's ``minimum_interval_seconds`` (refused unless whole)
heartbeat_seconds           a bound Dagster meets: a lost run worker is reported when its
                            process exits (ADR 0013), long before any heartbeat would lapse
follow_poll_seconds         the CLI's poll of a deployed run; run monitoring's interval
healthy_timeout_seconds     ``quartet up``; run monitoring's ``start_timeout_seconds``
==========================  =================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

from core.failures import ConfigError, may_retry
from core.ingestion import OrchestrationPolicy


def retry_or_fail(exc: BaseException, attempt: int, policy: OrchestrationPolicy) -> BaseException:
    """What an op raises for ``exc`` on its try number ``attempt`` (0: the first run).

    No retry helps: ``Failure(allow_retries=False)``. A retry may help: ``RetryRequested``
    after the policy's delay for this attempt, or ``exc`` itself once the retries are spent
    (the step then fails with the error that stopped it).
    """
    if not may_retry(exc):
        return dg.Failure(description=str(exc), allow_retries=False)
    if attempt >= policy.unit_retries:
        return exc
    return dg.RetryRequested(
        max_retries=policy.unit_retries, seconds_to_wait=policy.retry_delays()[attempt]
    )


@contextlib.contextmanager
def retried_as_policy_says(
    context: dg.OpExecutionContext, policy: OrchestrationPolicy
) -> Iterator[None]:
    """Around an op's work: its failures answered by :func:`retry_or_fail`."""
    try:
        yield
    except (dg.Failure, dg.RetryRequested):
        raise
    except Exception as exc:
        answer = retry_or_fail(exc, context.retry_number, policy)
        if answer is exc:
            raise
        raise answer from exc


def _refuse(field: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"dagster cannot honour [orchestration] {field} = {value!r}: {why}")


def schedule_offset(policy: OrchestrationPolicy, scheme: str) -> dict[str, int]:
    """The policy's cron as the offsets a schedule built from the partitioned job takes.

    Dagster derives such a schedule's cadence from the partitions (once per partition, for the
    one that just ended), so the cron may only choose when in the partition it fires. An
    unpartitioned project takes the cron as it is: nothing to derive (an empty dict).
    """
    minute, hour, day, month, weekday = policy.schedule.split()
    if scheme == "monthly":
        if month != "*" or weekday != "*" or not (minute + hour + day).isdigit():
            raise _refuse(
                "schedule",
                policy.schedule,
                "the schedule is built from the monthly partitioned job, so it runs once a month "
                "at a fixed minute, hour and day (e.g. '0 0 1 * *')",
            )
        return {"minute_of_hour": int(minute), "hour_of_day": int(hour), "day_of_month": int(day)}
    if scheme == "daily":
        if (day, month, weekday) != ("*", "*", "*") or not (minute + hour).isdigit():
            raise _refuse(
                "schedule",
                policy.schedule,
                "the schedule is built from the daily partitioned job, so it runs once a day "
                "at a fixed minute and hour (e.g. '0 0 * * *')",
            )
        return {"minute_of_hour": int(minute), "hour_of_day": int(hour)}
    return {}


def honoured(policy: OrchestrationPolicy, scheme: str) -> OrchestrationPolicy:
    """``policy`` when Dagster can follow every field for a project partitioned by ``scheme``
    (monthly, daily or none); else a ConfigError naming the field."""
    schedule_offset(policy, scheme)
    for field in ("source_poll_seconds", "follow_poll_seconds", "healthy_timeout_seconds"):
        value = getattr(policy, field)
        if value < 1 or not float(value).is_integer():
            raise _refuse(
                field, value, "Dagster takes it as whole seconds (sensor interval, run monitoring)"
            )
    return policy
