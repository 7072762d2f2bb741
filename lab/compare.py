"""``quartet compare``: every warehouse against bare, as one table plus the differences.

Warehouses are every ``warehouse/*.duckdb``, the PostgreSQL warehouses given as ``NAME=URL``
(``quartet compare --warehouse bare@pg=postgresql://...``), and the ``warehouse_<name>``
databases of the provider's server (lab/postgres.py) when it runs, shown as ``<name>@pg``.
Fingerprints compare content across engines (ADR 0011), so DuckDB and PostgreSQL sit side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from lab.fingerprint import Fingerprint, TableDiff, describe_diffs, diff, fingerprint

OK, BAD, MISSING = "✓", "✗", "-"


@dataclass
class Report:
    baseline: str
    prints: dict[str, Fingerprint] = field(default_factory=dict)
    diffs: dict[str, list[TableDiff]] = field(default_factory=dict)
    timings: dict[str, dict] = field(default_factory=dict)
    error: str | None = None

    @property
    def identical(self) -> bool:
        return self.error is None and len(self.prints) > 1 and not any(self.diffs.values())

    def to_json(self) -> dict:
        return {
            "baseline": self.baseline,
            "identical": self.identical,
            "error": self.error,
            "warehouses": {name: fp.digest() for name, fp in self.prints.items()},
            "tables": {
                name: {t: p.rows for t, p in sorted(fp.tables.items())}
                for name, fp in self.prints.items()
            },
            "differences": {
                name: [d.to_json() for d in ds] for name, ds in self.diffs.items() if ds
            },
            "timings": self.timings,
        }

    def render(self) -> str:
        if self.error:
            return f"quartet compare: {self.error}"
        names = list(self.prints)
        tables = sorted({t for fp in self.prints.values() for t in fp.tables})
        width = max(len(t) for t in tables) if tables else 10
        cols = {n: max(13, len(n)) for n in names}  # bare@pg, year_parallel@pg, ...
        header = f"{'table':{width}s}  " + "  ".join(f"{n:>{cols[n]}s}" for n in names)
        lines = [header, "-" * len(header)]
        for table in tables:
            cells = []
            for name in names:
                tp = self.prints[name].tables.get(table)
                if tp is None:
                    cells.append(f"{MISSING:>{cols[name]}s}")
                    continue
                mark = (
                    ""
                    if name == self.baseline
                    else (BAD if any(d.table == table for d in self.diffs.get(name, [])) else OK)
                )
                cells.append(f"{tp.rows:>{cols[name] - 2},} {mark:1s}")
            lines.append(f"{table:{width}s}  " + "  ".join(cells))
        if self.timings:
            cells = []
            for name in names:
                t = self.timings.get(name)
                cells.append(f"{(str(t['seconds']) + ' s') if t else '':>{cols[name]}s}")
            lines.append(f"{'wall time (quartet run all)':{width}s}  " + "  ".join(cells))
        lines.append("")
        for name, diffs in self.diffs.items():
            if diffs:
                lines.append(f"{name} differs from {self.baseline}:")
                lines.append(describe_diffs(self.baseline, name, diffs))
        verdict = "identical" if self.identical else "NOT identical"
        lines.append(f"{len(names)} warehouses, {len(tables)} tables: {verdict} to {self.baseline}")
        return "\n".join(lines)


def provider_warehouses() -> dict[str, str]:
    """``<name>@pg`` -> URL of every ``warehouse_<name>`` database on the provider's server, if
    it runs (nothing is started for this)."""
    import os

    from lab import postgres

    admin = os.environ.get(postgres.URL_ENV)
    if not admin:
        server = postgres.status()
        if server is None:
            return {}
        admin = server.admin_url
    import psycopg2

    try:
        con = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.OperationalError:
        return {}
    try:
        with con.cursor() as cur:
            cur.execute(
                r"select datname from pg_database where datname like 'warehouse\_%' order by 1"
            )
            names = [name for (name,) in cur.fetchall()]
    finally:
        con.close()
    return {
        f"{name.removeprefix('warehouse_')}@pg": postgres.with_database(admin, name)
        for name in names
    }


def compare_all(
    directory: Path,
    baseline: str = "bare",
    *,
    extra: dict[str, str] | None = None,
    discover: bool = True,
) -> Report:
    """Fingerprint every warehouse and diff each against ``baseline`` (a name of either kind)."""
    from core.failures import WarehouseConnectionError, WarehouseNotFoundError

    report = Report(baseline=baseline)
    order = {name: i for i, name in enumerate(settings.PIPELINE_NAMES)}
    locations: dict[str, Path | str] = {
        p.stem: p
        for p in sorted(directory.glob("*.duckdb"), key=lambda p: (order.get(p.stem, 99), p.stem))
    }
    postgres_ones = {**(provider_warehouses() if discover else {}), **(extra or {})}
    for name in sorted(postgres_ones, key=lambda n: (order.get(n.split("@")[0], 99), n)):
        locations[name] = postgres_ones[name]
    if baseline not in locations:
        report.error = f"no {directory / (baseline + '.duckdb')}: run `quartet run bare` first"
        return report
    try:
        report.prints[baseline] = fingerprint(locations[baseline])
        for name, location in locations.items():
            if name == baseline:
                continue
            report.prints[name] = fingerprint(location)
            report.diffs[name] = diff(report.prints[baseline], report.prints[name])
    except (WarehouseNotFoundError, WarehouseConnectionError) as exc:
        report.error = str(exc)
        return report
    others = [name for name in locations if name != baseline]
    base = Path(str(locations[baseline]))
    if not others:
        report.error = f"only {base.name} in {directory}: nothing to compare it with"
    timings = settings.state_dir() / "run-all.json"
    if timings.exists():
        report.timings = json.loads(timings.read_text())
    return report
