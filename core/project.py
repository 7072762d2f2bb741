"""A Quartet project: the pipeline one file declares (``quartet.toml``).

The file names the dlt source (an import path to a factory that follows :class:`SourceFactory`),
its resources with their keys and incremental cursor, the dbt project, the raw dataset, the
partition scheme and its range, the freshness probe the sensors and watchers poll (optional), and
whether the bundled demo API runs. ``QUARTET_PROJECT`` (or ``quartet ... --project PATH``) picks
the file; without it, the nycflights example (``examples/nycflights/quartet.toml``).

Everything here is a value read from the file; importing the source is left to :func:`source`,
at run time, so loading a project costs no dlt import.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.failures import ConfigError

if TYPE_CHECKING:
    from dlt.extract.source import DltSource

PROJECT_ENV = "QUARTET_PROJECT"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROJECT = REPO_ROOT / "examples" / "nycflights" / "quartet.toml"
SCHEMES = ("monthly", "daily", "none")
_KEY_RE = {"monthly": re.compile(r"^\d{4}-\d{2}$"), "daily": re.compile(r"^\d{4}-\d{2}-\d{2}$")}


@dataclass(frozen=True)
class Resource:
    """One dlt resource, one raw table: its merge key and its incremental cursor (or none)."""

    name: str
    primary_key: tuple[str, ...]
    #: the column the incremental cursor follows; None: loaded whole each run (merged on the key)
    cursor: str | None = None
    #: whether a partition bounds it (its cursor is sliced by the partition's interval); a
    #: resource that is not sliced is reference data, loaded by what changed since the last run
    sliced: bool = False


@dataclass(frozen=True)
class Partitions:
    """How runs are sliced in time: ``monthly`` (``YYYY-MM``), ``daily`` (``YYYY-MM-DD``) or
    ``none`` (a run loads whatever is new; no partition flags, no partitioned assets)."""

    scheme: str = "none"
    first: str | None = None
    last: str | None = None

    @property
    def enabled(self) -> bool:
        return self.scheme != "none"

    def parse(self, key: str) -> dt.date:
        """A partition key's first day; raises ConfigError naming the expected form."""
        form = {"monthly": "YYYY-MM (e.g. 2013-03)", "daily": "YYYY-MM-DD (e.g. 2013-03-05)"}
        if not self.enabled:
            raise ConfigError(f"this project has no partitions (got partition {key!r})")
        if not _KEY_RE[self.scheme].match(key or ""):
            raise ConfigError(f"partition must look like {form[self.scheme]}, got {key!r}")
        try:
            return dt.date.fromisoformat(key if self.scheme == "daily" else f"{key}-01")
        except ValueError:
            raise ConfigError(
                f"partition must look like {form[self.scheme]}, got {key!r}"
            ) from None

    def key(self, day: dt.date) -> str:
        return day.isoformat() if self.scheme == "daily" else day.strftime("%Y-%m")

    def next(self, key: str) -> str:
        day = self.parse(key)
        if self.scheme == "daily":
            return self.key(day + dt.timedelta(days=1))
        return self.key((day.replace(day=28) + dt.timedelta(days=4)).replace(day=1))

    def keys(self) -> list[str]:
        """Every partition of the range, in order (empty without partitions)."""
        if not self.enabled:
            return []
        keys, key = [], self.first
        while self.parse(key) <= self.parse(self.last):
            keys.append(key)
            key = self.next(key)
        return keys

    def bounds(self, key: str) -> tuple[str, str]:
        """``(since, until)``: the partition's first instant and the first instant after it."""
        return f"{self.parse(key).isoformat()}T00:00:00", f"{self.parse(self.next(key))}T00:00:00"


@dataclass(frozen=True)
class Project:
    """What ``quartet.toml`` declares (see the module doc); paths are absolute."""

    name: str
    path: Path
    source_factory: str
    resources: tuple[Resource, ...]
    raw_dataset: str
    dbt_project_dir: Path
    dbt_profiles_dir: Path
    partitions: Partitions = field(default_factory=Partitions)
    #: the first instant the incremental cursors ask for (None: from the beginning)
    start: str | None = None
    #: whether the source has a clock (``--as-of``: what it had published by that day)
    clock: bool = False
    #: the pipeline's schedule (cron, UTC) when the project sets it ([time] schedule), else
    #: core/ingestion.toml's; a daily project's default runs each day's partition once it is over
    schedule: str | None = None
    #: the clock of a run given no ``--as-of`` (None: whatever the source has published)
    as_of: str | None = None
    #: ``module:function(base_url, token)`` that returns when the source last published (ISO), which
    #: the sensors and watchers poll; None: they are not defined
    freshness_probe: str | None = None
    #: whether Quartet starts the bundled demo API (source_api/) for a run
    demo_api: bool = False

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def dbt_profile(self) -> str:
        """The profile the dbt project names (``profile:`` of its dbt_project.yml)."""
        return str(self._dbt_project_yml()["profile"])

    @property
    def dbt_project_name(self) -> str:
        return str(self._dbt_project_yml()["name"])

    def _dbt_project_yml(self) -> dict:
        import yaml

        return yaml.safe_load((self.dbt_project_dir / "dbt_project.yml").read_text())

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resources)

    def resource(self, name: str) -> Resource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise ConfigError(
            f"project {self.path}: no resource {name!r}; it declares {list(self.resource_names)}"
        )

    def describe_run(self, partitions: Sequence[str] | None, as_of: str | None) -> str:
        """What a run loads, as its first line says it: the partitions and the clock, where
        the project has them."""
        if not self.partitions.enabled:
            what = "everything the source has"
        elif partitions:
            what = ", ".join(partitions)
        else:
            what = f"every {'day' if self.partitions.scheme == 'daily' else 'month'}"
        if self.clock:
            what += f", as of {as_of or 'the latest publication'}"
        return what

    @property
    def reference_resources(self) -> tuple[str, ...]:
        """Resources no partition slices (loaded by what changed since the last run)."""
        return tuple(r.name for r in self.resources if not r.sliced)


@dataclass(frozen=True)
class SourceRequest:
    """What one ingestion asks of the source: the project's factory receives it."""

    project: Project
    #: the resources to load (a subset of the project's, in its order)
    resources: tuple[str, ...]
    #: the partition's interval ``[since, until)`` as ISO timestamps; None: not bounded
    since: str | None = None
    until: str | None = None
    #: the partition's key (``2013-03``, ``2013-03-05``), None: not partitioned
    partition: str | None = None
    #: the source's clock (``--as-of``), when the project declares one
    as_of: str | None = None
    #: the bundled demo API's address and token, when the project runs it
    base_url: str | None = None
    token: str | None = None
    #: the run's tuning ([performance], [retries]) for sources that page or retry
    page_size: int = 10_000


class SourceFactory(Protocol):
    """The protocol of ``[source] factory``: a dlt source with one resource per requested name,
    each declaring the project's primary key (and, where declared, an incremental cursor on its
    column bounded by ``since``/``until``)."""

    def __call__(self, request: SourceRequest) -> DltSource: ...


def path() -> Path:
    """The project file this process runs (QUARTET_PROJECT, else the nycflights example)."""
    chosen = os.environ.get(PROJECT_ENV)
    return Path(chosen).expanduser().resolve() if chosen else DEFAULT_PROJECT


def current() -> Project:
    """The project of this process (read once per file)."""
    return load(path())


def read_toml(file: Path, what: str) -> dict[str, Any]:
    """A TOML file's contents; a missing or malformed one is one ConfigError naming ``what``
    (the project file, the ingestion config) and the file."""
    try:
        return tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {file} is not valid TOML: {exc}") from None


@functools.cache
def load(file: Path) -> Project:
    """Read and check a project file; every mistake is one ConfigError naming the file."""
    raw = read_toml(file, "project file")

    def need(section: str, key: str, default: Any = ..., kind: type = str) -> Any:
        value = raw.get(section, {}).get(key, default)
        if value is ...:
            raise ConfigError(f"project file {file}: missing [{section}] {key}")
        if value is not None and not isinstance(value, kind):
            raise ConfigError(
                f"project file {file}: [{section}] {key} must be {kind.__name__}, got {value!r}"
            )
        return value

    folder = file.parent
    declared = need("source", "resources", kind=dict)
    if not declared:
        raise ConfigError(f"project file {file}: [source.resources] declares no resource")
    resources = []
    for name, spec in declared.items():
        key = spec.get("primary_key")
        if isinstance(key, str):
            key = [key]
        if not key or not all(isinstance(k, str) for k in key):
            raise ConfigError(
                f"project file {file}: [source.resources.{name}] primary_key must name a column "
                "or a list of columns"
            )
        unknown = set(spec) - {"primary_key", "cursor", "sliced"}
        if unknown:
            raise ConfigError(
                f"project file {file}: [source.resources.{name}] has unknown keys {sorted(unknown)}"
            )
        if spec.get("sliced") and not spec.get("cursor"):
            raise ConfigError(
                f"project file {file}: [source.resources.{name}] is sliced but has no cursor"
            )
        resources.append(
            Resource(name, tuple(key), spec.get("cursor"), bool(spec.get("sliced", False)))
        )

    scheme = need("time", "partitions", "none")
    if scheme not in SCHEMES:
        raise ConfigError(
            f"project file {file}: [time] partitions must be one of {list(SCHEMES)}, got {scheme!r}"
        )
    partitions = Partitions(scheme)
    if partitions.enabled:
        partitions = Partitions(scheme, need("time", "first"), need("time", "last"))
        first, last = partitions.parse(partitions.first), partitions.parse(partitions.last)
        if first > last:
            raise ConfigError(f"project file {file}: [time] first comes after last")
    elif any(r.sliced for r in resources):
        raise ConfigError(
            f"project file {file}: resources are sliced but [time] partitions is 'none'"
        )
    start = need("time", "start", None)
    if start is not None:
        try:
            start = dt.date.fromisoformat(start).isoformat()
        except ValueError:
            raise ConfigError(f"project file {file}: [time] start must be YYYY-MM-DD") from None

    dbt_dir = (folder / need("dbt", "project_dir")).resolve()
    if not (dbt_dir / "dbt_project.yml").exists():
        raise ConfigError(
            f"project file {file}: [dbt] project_dir {dbt_dir} has no dbt_project.yml"
        )
    factory = need("source", "factory")
    if ":" not in factory:
        raise ConfigError(
            f"project file {file}: [source] factory must be 'module:function' or "
            f"'file.py:function', got {factory!r}"
        )
    return Project(
        name=need("project", "name"),
        path=file,
        source_factory=factory,
        resources=tuple(resources),
        raw_dataset=need("source", "dataset", "raw"),
        dbt_project_dir=dbt_dir,
        dbt_profiles_dir=(
            folder / need("dbt", "profiles_dir", need("dbt", "project_dir"))
        ).resolve(),
        partitions=partitions,
        start=start,
        clock=need("time", "clock", False, bool),
        as_of=need("time", "as_of", None) or None,
        schedule=need("time", "schedule", None) or ("0 0 * * *" if scheme == "daily" else None),
        freshness_probe=need("freshness", "probe", None),
        demo_api=need("source", "demo_api", False, bool),
    )


def resolve(project: Project, spec: str) -> Callable[..., Any]:
    """``module:attr`` (importable) or ``file.py:attr`` (relative to the project file)."""
    module_name, _, attr = spec.partition(":")
    if module_name.endswith(".py"):
        file = (project.folder / module_name).resolve()
        unique = f"quartet_project_{project.name}_{file.stem}"
        module = sys.modules.get(unique)
        if module is None:
            spec_ = importlib.util.spec_from_file_location(unique, file)
            if spec_ is None or not file.exists():
                raise ConfigError(f"project file {project.path}: {file} does not exist")
            module = importlib.util.module_from_spec(spec_)
            sys.modules[unique] = module
            spec_.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"project file {project.path}: {module_name} has no {attr!r}") from None


def source(request: SourceRequest) -> DltSource:
    """The project's dlt source for one request (its factory, imported now)."""
    return resolve(request.project, request.project.source_factory)(request)


def freshness(project: Project) -> Callable[..., str | None] | None:
    """The project's freshness probe, or None when it declares none."""
    return resolve(project, project.freshness_probe) if project.freshness_probe else None
