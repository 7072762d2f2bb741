"""``quartet compare``: every warehouse/*.duckdb against bare, as one table plus the differences."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.fingerprint import Fingerprint, TableDiff, describe_diffs, diff, fingerprint

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
        header = f"{'table':{width}s}  " + "  ".join(f"{n:>13s}" for n in names)
        lines = [header, "-" * len(header)]
        for table in tables:
            cells = []
            for name in names:
                tp = self.prints[name].tables.get(table)
                if tp is None:
                    cells.append(f"{MISSING:>13s}")
                    continue
                mark = (
                    ""
                    if name == self.baseline
                    else (BAD if any(d.table == table for d in self.diffs.get(name, [])) else OK)
                )
                cells.append(f"{tp.rows:>11,} {mark:1s}")
            lines.append(f"{table:{width}s}  " + "  ".join(cells))
        if self.timings:
            cells = []
            for name in names:
                t = self.timings.get(name)
                cells.append(f"{(str(t['seconds']) + ' s') if t else '':>13s}")
            lines.append(f"{'wall time (quartet run all)':{width}s}  " + "  ".join(cells))
        lines.append("")
        for name, diffs in self.diffs.items():
            if diffs:
                lines.append(f"{name} differs from {self.baseline}:")
                lines.append(describe_diffs(self.baseline, name, diffs))
        verdict = "identical" if self.identical else "NOT identical"
        lines.append(f"{len(names)} warehouses, {len(tables)} tables: {verdict} to {self.baseline}")
        return "\n".join(lines)


def compare_all(directory: Path, baseline: str = "bare") -> Report:
    report = Report(baseline=baseline)
    base = directory / f"{baseline}.duckdb"
    if not base.exists():
        report.error = f"no {base}: run `quartet run bare` first"
        return report
    others = [p for p in sorted(directory.glob("*.duckdb")) if p != base]
    order = {name: i for i, name in enumerate(settings.PIPELINE_NAMES)}
    others.sort(key=lambda p: (order.get(p.stem, 99), p.stem))
    report.prints[baseline] = fingerprint(base)
    for path in others:
        report.prints[path.stem] = fingerprint(path)
        report.diffs[path.stem] = diff(report.prints[baseline], report.prints[path.stem])
    if not others:
        report.error = f"only {base.name} in {directory}: nothing to compare it with"
    timings = settings.state_dir() / "run-all.json"
    if timings.exists():
        report.timings = json.loads(timings.read_text())
    return report
