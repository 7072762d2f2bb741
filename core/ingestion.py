"""The ingestion config (core/ingestion.toml) and the run window derived from it.

A run is described by a :class:`RunWindow`: which resources, the API clock (``as_of``) and
optionally one month (``partition``). Every orchestrator builds one of these and hands it to
:mod:`core.pipeline`; nothing else decides what gets loaded.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from core import settings
from core.failures import ConfigError

PARTITION_RE = re.compile(r"^(\d{4})-(\d{2})$")
#: the runs' default clock, in place of the project's ``[time] as_of`` (a test or benchmark
#: starting a topology whose source API begins at a given day)
AS_OF_ENV = "QUARTET_AS_OF"
#: settings a test or benchmark may override without editing the file
ENV_OVERRIDES = {
    ("faults", "rate"): "QUARTET_FAULT_RATE",
    ("faults", "seed"): "QUARTET_FAULT_SEED",
    ("scale", "factor"): "QUARTET_SCALE",
}


#: what DuckDB's memory_limit accepts: a size or a percentage of RAM
MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|%)$")


@dataclass(frozen=True)
class OrchestrationPolicy:
    """The [orchestration] section: retries, schedule and poll intervals every adapter reads."""

    unit_retries: int = 2
    retry_delay_seconds: float = 2.0
    retry_backoff: float = 2.0
    max_retry_delay_seconds: float = 30.0
    schedule: str = "0 0 1 * *"
    source_poll_seconds: float = 60.0
    heartbeat_seconds: float = 30.0
    follow_poll_seconds: float = 1.0
    healthy_timeout_seconds: float = 180.0

    def retry_delays(self) -> list[float]:
        """The wait before each retry of a unit (exponential, capped)."""
        return [
            min(
                self.retry_delay_seconds * self.retry_backoff**attempt, self.max_retry_delay_seconds
            )
            for attempt in range(self.unit_retries)
        ]


@dataclass(frozen=True)
class IngestionConfig:
    resources: tuple[str, ...]
    reference_resources: tuple[str, ...]
    start: str
    partitions_from: str
    partitions_to: str
    as_of: str | None
    page_size: int
    extract_workers: int
    normalize_workers: int
    loader_file_format: str
    duckdb_memory_limit: str
    max_attempts: int
    backoff_factor: float
    max_retry_delay: float
    request_timeout: float
    fault_rate: float
    fault_seed: int
    scale: int
    orchestration: OrchestrationPolicy = field(default_factory=lambda: OrchestrationPolicy())
    path: Path = field(default=settings.INGESTION_CONFIG, compare=False)

    def partitions(self) -> list[str]:
        """Every partition of the project's range, in order (none without partitions)."""
        from core import project

        return project.current().partitions.keys()

    def clock_range(self) -> tuple[str, str]:
        """The first and last day ``--as-of`` may name: from the range's start to the end of its
        last partition (at scale N, the year is replicated N times into the following years)."""
        from core import project

        _, until = project.current().partitions.bounds(self.partitions_to)
        end = dt.date.fromisoformat(until[:10]) - dt.timedelta(days=1)
        return self.start, end.replace(year=end.year + self.scale - 1).isoformat()

    def runtime_env(
        self, resources: tuple[str, ...] | None = None, *, concurrent_units: bool = False
    ) -> dict[str, str]:
        """dlt's configuration (HTTP retries, workers) as the environment variables dlt reads.

        Parallel normalize pays off only for the big time-sliced table (flights, 4 files of 100k
        rows): a process pool costs more to start than a small resource takes to normalize, so
        other loads normalize in-process. ``concurrent_units``: units load at once in this
        process (threads, on PostgreSQL), sharing one environment; every unit then gets the same
        values (in-process normalize, the units being the parallelism), so none overwrites
        another's while it runs.
        """
        big = resources is None or "flights" in resources
        workers = self.normalize_workers if big and not concurrent_units else 1
        return {
            "RUNTIME__REQUEST_MAX_ATTEMPTS": str(self.max_attempts),
            "RUNTIME__REQUEST_BACKOFF_FACTOR": str(self.backoff_factor),
            "RUNTIME__REQUEST_MAX_RETRY_DELAY": str(self.max_retry_delay),
            "RUNTIME__REQUEST_TIMEOUT": str(self.request_timeout),
            "EXTRACT__WORKERS": str(self.extract_workers),
            "NORMALIZE__WORKERS": str(workers),
            "DATA_WRITER__DISABLE_COMPRESSION": "true",
            # files of at most 100k rows, so that normalize workers can share a big table
            "DATA_WRITER__FILE_MAX_ITEMS": "100000",
        }


# -- months: the one place for month arithmetic ---------------------------------------------------


def next_month(partition: str) -> str:
    """``2013-12`` -> ``2014-01``."""
    year, month = parse_partition(partition)
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}"


def month_start(partition: str) -> dt.date:
    """``2013-03`` -> 2013-03-01."""
    year, month = parse_partition(partition)
    return dt.date(year, month, 1)


def months_between(first: str, last: str) -> list[str]:
    """``2013-01``..``2013-03`` -> the months in between, both ends included (empty when
    ``first`` comes after ``last``)."""
    months, month = [], first
    while parse_partition(month) <= parse_partition(last):
        months.append(month)
        month = next_month(month)
    return months


def parse_partition(value: str) -> tuple[int, int]:
    match = PARTITION_RE.match(value or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ConfigError(f"partition must look like YYYY-MM (e.g. 2013-03), got {value!r}")
    return int(match.group(1)), int(match.group(2))


def parse_date(name: str, value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None


def load_config(path: Path | None = None) -> IngestionConfig:
    """Read the ingestion config; QUARTET_FAULT_RATE / QUARTET_FAULT_SEED / QUARTET_SCALE override."""
    path = path or Path(os.environ.get("QUARTET_INGESTION_CONFIG", settings.INGESTION_CONFIG))
    from core import project as projects

    raw = projects.read_toml(path, "ingestion config")

    def get(section: str, key: str, kind: type):
        try:
            value = raw[section][key]
        except KeyError:
            raise ConfigError(f"ingestion config {path}: missing [{section}] {key}") from None
        env = os.environ.get(ENV_OVERRIDES.get((section, key), ""))
        if env is not None:
            value = env
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"ingestion config {path}: [{section}] {key} must be {kind.__name__}, got {value!r}"
            ) from None

    project = projects.current()
    config = IngestionConfig(
        resources=project.resource_names,
        reference_resources=project.reference_resources,
        start=project.start or "",
        partitions_from=project.partitions.first or "",
        partitions_to=project.partitions.last or "",
        as_of=parse_date(AS_OF_ENV, os.environ[AS_OF_ENV])
        if os.environ.get(AS_OF_ENV)
        else project.as_of,
        page_size=get("performance", "page_size", int),
        extract_workers=get("performance", "extract_workers", int),
        normalize_workers=get("performance", "normalize_workers", int),
        loader_file_format=get("performance", "loader_file_format", str),
        duckdb_memory_limit=get("performance", "duckdb_memory_limit", str),
        max_attempts=get("retries", "max_attempts", int),
        backoff_factor=get("retries", "backoff_factor", float),
        max_retry_delay=get("retries", "max_retry_delay", float),
        request_timeout=get("retries", "request_timeout", float),
        fault_rate=get("faults", "rate", float),
        fault_seed=get("faults", "seed", int),
        scale=get("scale", "factor", int),
        orchestration=OrchestrationPolicy(
            **{
                name: get("orchestration", name, type(default))
                for name, default in vars(OrchestrationPolicy()).items()
            }
            | ({"schedule": project.schedule} if project.schedule else {})
        ),
        path=path,
    )
    policy = config.orchestration
    for name, value in vars(policy).items():
        if isinstance(value, int | float) and (
            value < 0 or (value == 0 and name != "unit_retries")
        ):
            raise ConfigError(f"ingestion config {path}: [orchestration] {name} must be positive")
    if len(policy.schedule.split()) != 5:
        raise ConfigError(
            f"ingestion config {path}: [orchestration] schedule must be a 5-field cron, got {policy.schedule!r}"
        )
    if not 1 <= config.page_size <= 50_000:
        raise ConfigError(f"ingestion config {path}: [performance] page_size must be 1..50000")
    if not MEMORY_RE.match(config.duckdb_memory_limit):
        raise ConfigError(
            f"ingestion config {path}: [performance] duckdb_memory_limit must be a size such as "
            f"'500MB' or '2GB', or a share of RAM such as '50%'; got {config.duckdb_memory_limit!r}"
        )
    return config


@dataclass(frozen=True)
class RunWindow:
    """What one run loads: resources, the API clock and optionally one month."""

    resources: tuple[str, ...]
    as_of: str | None = None
    partition: str | None = None

    @property
    def since(self) -> str | None:
        """The partition's first instant (ISO), None without a partition."""
        from core import project

        return project.current().partitions.bounds(self.partition)[0] if self.partition else None

    @property
    def until(self) -> str | None:
        """The first instant after the partition (ISO), None without a partition."""
        from core import project

        return project.current().partitions.bounds(self.partition)[1] if self.partition else None

    def only(self, *resources: str) -> RunWindow:
        return replace(self, resources=tuple(resources))


def window(
    config: IngestionConfig,
    *,
    as_of: str | None = None,
    partition: str | None = None,
    resources: tuple[str, ...] | None = None,
) -> RunWindow:
    """Validate the run's flags against the config and build its window."""
    from core import project as projects

    project = projects.current()
    if partition is not None:
        project.partitions.parse(partition)
        if partition not in config.partitions():
            raise ConfigError(
                f"partition {partition} is outside the configured range "
                f"{config.partitions_from}..{config.partitions_to}"
            )
    if as_of is not None:
        if not project.clock:
            raise ConfigError(
                f"--as-of {as_of}: the project {project.name} declares no clock for its source "
                f"([time] clock in {project.path})"
            )
        first, last = config.clock_range()
        if not first <= parse_date("--as-of", as_of) <= last:
            raise ConfigError(
                f"--as-of {as_of} is outside the source's range {first}..{last}: the clock "
                "says what the source had published by that day (a first publication, or its "
                f"correction), and it publishes nothing before {first} or after {last}"
            )
    chosen = tuple(resources) if resources else config.resources
    unknown = [r for r in chosen if r not in config.resources]
    if unknown:
        raise ConfigError(
            f"resources {unknown} are not declared in {project.path} "
            f"(it declares {list(project.resource_names)})"
        )
    return RunWindow(
        resources=chosen,
        as_of=parse_date("--as-of", as_of) if as_of else config.as_of,
        partition=partition,
    )
